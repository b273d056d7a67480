"""Who may call what: one table for every API method.

Each method says whether it needs a secure identity (HTTPS client certificate, a trusted front
end's DN, or a verified token), which roles may call it, and whether it changes state (then it
is audited). Ownership (a user acting only on their own jobs) is checked where the targets are
known, in the core. ``open`` mode skips these checks; ``strict`` mode enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pandawms.model.errors import Forbidden, StatusCode, Unauthenticated
from pandawms.model.identity import Identity


@dataclass(frozen=True)
class Rule:
    """Access rule of one method."""

    secure: bool
    roles: frozenset[str] = frozenset()
    audit: bool = False


ANYONE = Rule(secure=False)
USER = Rule(secure=True, roles=frozenset({"user"}))
USER_WRITE = Rule(secure=True, roles=frozenset({"user"}), audit=True)
PILOT = Rule(secure=True, roles=frozenset({"pilot"}))
PILOT_WRITE = Rule(secure=True, roles=frozenset({"pilot"}), audit=True)
PRODUCTION_WRITE = Rule(secure=True, roles=frozenset({"production"}), audit=True)
#: Secrets are read by their owner: a user (pbook) or a pilot (its own broker credentials).
SECRETS_OWNER = Rule(secure=True, roles=frozenset({"user", "pilot"}))
#: Harvester instances run with a production credential. A pilot's credential (on every worker
#: node) must not report workers or take commands for an instance: it could fail any job.
HARVESTER = Rule(secure=True, roles=frozenset({"production"}))

#: What a method missing from the tables below gets: :func:`check` refuses it whoever calls.
#: Audited, so that a call in open mode (where nothing is checked) leaves a trace.
NO_RULE = Rule(secure=True, audit=True)

#: v1 methods by (module, method).
V1_RULES: dict[tuple[str, str], Rule] = {
    ("system", "is_alive"): ANYONE,
    ("system", "get_attributes"): ANYONE,
    ("metaconfig", "get_site_specs"): ANYONE,
    ("job", "submit"): USER_WRITE,
    ("job", "get_description"): USER,
    ("job", "get_description_incl_archive"): USER,
    ("job", "kill"): USER_WRITE,
    ("job", "get_status"): USER,
    ("pilot", "acquire_jobs"): PILOT,
    ("pilot", "update_job"): PILOT,
    ("pilot", "update_jobs_bulk"): PILOT,
    ("pilot", "get_job_status"): PILOT,
    ("harvester", "update_workers"): HARVESTER,
    ("harvester", "heartbeat"): HARVESTER,
    ("harvester", "report_worker_statistics"): HARVESTER,
    ("harvester", "get_worker_statistics"): HARVESTER,
    ("harvester", "acquire_commands"): HARVESTER,
    ("harvester", "acknowledge_commands"): HARVESTER,
    ("harvester", "get_current_worker_id"): HARVESTER,
    ("harvester", "add_sweep_command"): PRODUCTION_WRITE,
    ("harvester", "update_service_metrics"): HARVESTER,
    ("harvester", "add_dialogs"): HARVESTER,
    ("pilot", "update_worker_status"): PILOT,
    ("pilot", "update_worker_node"): PILOT,
    ("pilot", "update_worker_node_gpu"): PILOT,
    # Task layer and sandbox cache: owners act on their own tasks (checked in core/tasks/commands.py).
    ("file_server", "upload_cache_file"): USER_WRITE,
    ("file_server", "validate_cache_file"): USER,
    ("task", "submit"): USER_WRITE,
    ("task", "kill"): USER_WRITE,
    ("task", "finish"): USER_WRITE,
    ("task", "pause"): USER_WRITE,
    ("task", "resume"): USER_WRITE,
    ("task", "retry"): USER_WRITE,
    ("task", "reactivate"): USER_WRITE,
    ("task", "increase_attempts"): USER_WRITE,
    ("task", "reload_input"): USER_WRITE,
    ("task", "get_status"): USER,
    ("task", "get_task_parameters"): USER,
    ("task", "get_job_ids"): USER,
    ("task", "get_details"): USER,
    ("task", "get_detailed_info"): USER,
    ("task", "get_tasks_modified_since"): USER,
    ("task", "get_tasks_detailed_info_since"): USER,
    ("task", "get_job_descriptions"): USER,
    ("task", "get_datasets_and_files"): USER,
    # Credentials: only Harvester (production) may fetch proxies, key pairs and token keys.
    ("creds", "get_proxy"): HARVESTER,
    ("creds", "get_key_pair"): HARVESTER,
    ("creds", "get_token_key"): HARVESTER,
    ("metaconfig", "get_resource_types"): USER,
    ("metaconfig", "get_banned_users"): USER,
    # Job counts: readable by any identified user (the real server also answers anonymous calls).
    ("statistics", "active_job_stats_by_site"): USER,
    ("statistics", "active_job_detailed_stats_by_site"): USER,
    ("statistics", "job_stats_by_cloud"): USER,
    ("statistics", "production_job_stats_by_cloud_and_processing_type"): USER,
    ("statistics", "job_stats_by_site_and_resource_type"): USER,
    ("statistics", "job_stats_by_site_share_and_resource_type"): USER,
    # Worker logs: Harvester writes them, identified users read them back.
    ("file_server", "upload_jedi_log"): PRODUCTION_WRITE,
    ("file_server", "update_jedi_log"): PRODUCTION_WRITE,
    ("file_server", "download_jedi_log"): USER,
    # The event service: pilots and production (Harvester) take and report ranges, bound to the
    # jobs they took (core/jobs/pilot_binding.py); owners read the ranges of their jobs.
    ("event", "acquire_event_ranges"): PILOT,
    ("event", "update_event_ranges"): PILOT,
    ("event", "update_single_event_range"): PILOT,
    ("event", "get_available_event_range_count"): PILOT,
    ("event", "get_event_range_statuses"): USER,
    # pbook's other calls: owners act on their own jobs and tasks (checked in the core).
    ("job", "set_debug_mode"): USER_WRITE,
    ("job", "get_metadata_for_analysis_jobs"): USER,
    ("file_server", "upload_file_recovery_request"): USER_WRITE,
    ("task", "get_parent_detailed_info"): USER,
    ("idds", "relay_idds_command"): USER,
    ("idds", "execute_idds_workflow_command"): USER,
    ("workflow", "submit_workflow_raw_request"): USER,
    ("workflow", "submit_workflow"): USER,
    ("workflow", "get_workflow_details"): USER,
    # A user's secrets: the owner is the caller's identity, never an argument.
    ("creds", "set_user_secrets"): USER_WRITE,
    ("creds", "get_user_secrets"): USER,
    # Token pilots renew their token; a user credential may not obtain one.
    ("creds", "get_access_token"): PILOT,
    # Operator changes of tasks (core/tasks/changes.py): the real server asks for the production
    # role for all but reassign and kill_unfinished_jobs, which owners may use on their tasks.
    ("task", "change_priority"): PRODUCTION_WRITE,
    ("task", "change_attribute"): PRODUCTION_WRITE,
    ("task", "change_split_rule"): PRODUCTION_WRITE,
    ("task", "change_modification_time"): PRODUCTION_WRITE,
    ("task", "reassign"): USER_WRITE,
    ("task", "reassign_global_share"): PRODUCTION_WRITE,
    ("task", "release"): PRODUCTION_WRITE,
    ("task", "avalanche"): PRODUCTION_WRITE,
    ("task", "kill_unfinished_jobs"): USER_WRITE,
    ("task", "enable_job_cloning"): PRODUCTION_WRITE,
    ("task", "disable_job_cloning"): PRODUCTION_WRITE,
    ("task", "enable_jumbo_jobs"): PRODUCTION_WRITE,
    ("task", "get_jumbo_job_datasets"): USER,
    # Job commands (core/jobs/commands.py): owners reassign their own jobs.
    ("job", "reassign"): USER_WRITE,
    ("job", "set_command"): PRODUCTION_WRITE,
    ("job", "generate_offline_execution_script"): USER,
}

#: Legacy ``/server/panda`` methods.
LEGACY_RULES: dict[str, Rule] = {
    "isAlive": ANYONE,
    "getStatus": ANYONE,
    "checkJobStatus": ANYONE,
    "getJob": PILOT,
    "updateJob": PILOT,
    "updateJobsInBulk": PILOT,
    "getEventRanges": PILOT,
    "updateEventRanges": PILOT,
    "updateEventRange": PILOT,
    "checkEventsAvailability": PILOT,
    "updateWorkerPilotStatus": PILOT,
    # Credentials go to production identities only (a pilot credential sits on every worker node).
    "getKeyPair": HARVESTER,
    "getProxy": HARVESTER,
    "getResourceTypes": PILOT,
    "setDebugMode": PILOT_WRITE,
    "get_user_secrets": SECRETS_OWNER,
    "get_access_token": PILOT,
    "relay_idds_command": USER,
    "execute_idds_workflow_command": USER,
}

#: Pages and files outside the APIs.
PATH_RULES: dict[str, Rule] = {"monitor": USER, "metrics": ANYONE, "cache": ANYONE, "health": ANYONE}

_SECURE_METHODS = ("x509", "header", "token")


def check(rule: Rule, who: Identity, what: str) -> None:
    """Raise unless ``who`` may call a method with ``rule``.

    :data:`NO_RULE` (a method missing from the tables above) is always refused: a missing rule is
    a programming error that the architecture test catches, never a reason to guess one.
    """
    if rule is NO_RULE:
        raise Forbidden(f"{what}: no access rule")
    if rule.secure and who.method not in _SECURE_METHODS:
        raise Unauthenticated(
            f"{what} needs a secure identity: HTTPS with a grid certificate or proxy, or an OIDC token"
        )
    if rule.roles and not (rule.roles & who.roles):
        if "pilot" in rule.roles:
            raise Forbidden(f"{what}: production or pilot role required", code=StatusCode.ROLE)
        raise Forbidden(f"{what}: role {' or '.join(sorted(rule.roles))} required")
