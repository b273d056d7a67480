"""Reading the task parameters prun, pathena and phpo send, into a plan the server can execute.

The parameter dict is JEDI's (taskName, jobParameters, log, nEvents/nEventsPerJob, pfnList,
nFilesPerJob, buildSpec, ...). Everything is checked here, before anything is stored, so a bad
task is refused at submission with a message that names the parameter, and a stored task can
always be turned into jobs. Parameters this server does not act on are kept (they are returned
by task/get_task_parameters) but ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pandawms.model.errors import PandaError

#: Most pseudo input files (jobs, for noInput tasks) one task may have.
MAX_INPUT_FILES = 100000
#: Most attempts a user may ask for per input file.
MAX_ATTEMPTS = 20
DEFAULT_MAX_ATTEMPT = 3
#: Script JEDI runs for general prun tasks and for their build step.
RUN_SCRIPT = "runGen-00-00-02"
BUILD_SCRIPT = "buildGen-00-00-01"

#: Placeholders whose value depends on the job and is filled at generation.
_JOB_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


class BadTaskParameter(PandaError):
    """A task parameter that cannot be used; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"task parameter {name}: {problem}")
        self.parameter = name


@dataclass(frozen=True)
class OutputStream:
    """An output or log dataset and the LFN template of its files (``$JEDITASKID`` still in)."""

    dataset: str
    template: str
    stream: str
    container: str | None = None
    #: RSE (expression) the user wants the files replicated to (prun --destSE); None: none.
    destination: str | None = None


@dataclass(frozen=True)
class InputStream:
    """An input dataset (or container) whose files the task runs over, and which of them.

    ``include``/``exclude`` are prun's --match/--antiMatch (and its default exclusion of log
    files): comma-separated regular expressions matched against file names; ``offset`` skips
    the first files (--nSkipFiles); ``files`` names the only files to use.
    """

    dataset: str
    include: str | None = None
    exclude: str | None = None
    offset: int = 0
    files: tuple[str, ...] = ()
    #: The task parameter that declared it (for messages).
    param: str = "jobParameters"


@dataclass(frozen=True)
class BuildStep:
    """prun/pathena's build job: unpacks the sandbox into a library the run jobs use."""

    archive: str
    job_parameters: str
    trans_path: str
    label: str


@dataclass(frozen=True)
class EventService:
    """How an event-service task runs (JEDI's nEventsPerWorker, nEventsPerRange, nEsConsumers,
    maxAttemptES, esmergeSpec): each job's events are cut into ranges of ``events_per_range``
    that ``consumers`` jobs share; a merge job collects their outputs."""

    events_per_range: int
    consumers: int = 1
    #: Times a range may fail (or be lost with its consumer) before it is fatal.
    max_attempt: int = 3
    #: Events of each input file when the input files do not say (nEventsPerFile).
    events_per_file: int | None = None
    processing_type: str | None = None
    merge_trans_path: str | None = None
    merge_job_parameters: str | None = None


@dataclass
class TaskPlan:
    """What a task will do, from its checked parameters."""

    name: str
    vo: str
    label: str
    template: str
    outputs: list[OutputStream]
    log: OutputStream | None
    #: Pseudo input files: (lfn, start event, end event) each; one or more make a job.
    inputs: list[tuple[str, int | None, int | None]]
    files_per_job: int
    events_per_job: int | None
    #: prun --nGBPerJob: input files are grouped up to this many GiB per job (files_per_job
    #: then only bounds how many files one pass reads).
    gb_per_job: int | None = None
    site: str | None = None
    excluded_sites: list[str] = field(default_factory=list)
    processing_type: str | None = None
    trans_path: str = ""
    trans_uses: str | None = None
    trans_home: str | None = None
    architecture: str | None = None
    container_name: str | None = None
    working_group: str | None = None
    core_count: int = 1
    ram_count: int | None = None
    walltime: int | None = None
    max_attempt: int = DEFAULT_MAX_ATTEMPT
    priority: int = 1000
    source_url: str | None = None
    build: BuildStep | None = None
    #: Cached files (sandboxes) the jobs will fetch; they must exist and are kept alive.
    cache_files: list[str] = field(default_factory=list)
    #: Input datasets: their files are read from the data management system when the task is
    #: refined (``inputs`` is then empty); at most ``max_files`` of them (nFiles) are used.
    input_streams: list[InputStream] = field(default_factory=list)
    max_files: int | None = None
    #: Set for an event-service task (its jobs consume event ranges).
    event_service: EventService | None = None


def _str(params: Mapping[str, Any], name: str, default: str | None = None, limit: int = 250) -> str | None:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadTaskParameter(name, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadTaskParameter(name, f"is longer than {limit} characters")
    return value


def _int(params: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadTaskParameter(name, f"must be an integer, got {value!r}"[:120])
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise BadTaskParameter(name, f"must be an integer, got {value!r}"[:120])
    if not low <= number <= high:
        raise BadTaskParameter(name, f"must be between {low} and {high}, got {number}")
    return number


def _str_list(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadTaskParameter(name, "must be a list of strings")
    return value


def _input_stream(item: Mapping[str, Any], where: str) -> list[InputStream]:
    """prun/pathena's input item: one stream per dataset of a comma-separated ``dataset``."""
    names = item.get("dataset")
    if not isinstance(names, str) or not names.strip(","):
        raise BadTaskParameter(f"{where}.dataset", "an input needs its dataset name")
    if item.get("hidden") is True:
        raise BadTaskParameter(
            f"{where}", "secondary input datasets (--secondaryDSs) are not supported by this server yet"
        )
    patterns = {}
    for key in ("include", "exclude"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise BadTaskParameter(f"{where}.{key}", "must be a string of comma-separated patterns")
        for pattern in (value or "").split(","):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise BadTaskParameter(
                    f"{where}.{key}", f"{pattern[:80]!r} is not a regular expression: {exc}"
                ) from None
        patterns[key] = value[:1000] if value else None
    offset = item.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_INPUT_FILES:
        raise BadTaskParameter(f"{where}.offset", f"must be a whole number from 0 to {MAX_INPUT_FILES}")
    files = item.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise BadTaskParameter(f"{where}.files", "must be a list of file names")
    if len(files) > MAX_INPUT_FILES:
        raise BadTaskParameter(f"{where}.files", f"names more than {MAX_INPUT_FILES} files")
    streams = []
    for name in names.split(","):
        if not name.strip():
            continue
        if len(name) > 255 or not re.fullmatch(r"[A-Za-z0-9._\-:/]+", name.strip()):
            raise BadTaskParameter(f"{where}.dataset", f"{name[:100]!r} is not a dataset name")
        streams.append(
            InputStream(name.strip(), patterns["include"], patterns["exclude"], offset, tuple(files), where)
        )
    return streams


def build_template(items: Any) -> tuple[str, list[OutputStream], list[str], list[InputStream]]:
    """The job parameter template from ``jobParameters`` items, the output streams they declare,
    the cache files they name (``-a <archive>``) and the input datasets.

    Items join with one space unless ``padding`` is false; ``hidden`` items only declare
    outputs. An input item's value (``-i "${IN/T}"``) stays in the template and is filled with
    each job's file names.
    """
    if not isinstance(items, list) or not items:
        raise BadTaskParameter("jobParameters", "must be a non-empty list of objects")
    parts: list[str] = []
    outputs: list[OutputStream] = []
    archives: list[str] = []
    inputs: list[InputStream] = []
    for index, item in enumerate(items):
        where = f"jobParameters[{index}]"
        if not isinstance(item, dict):
            raise BadTaskParameter(where, "must be an object with type and value")
        kind = item.get("type")
        if kind not in ("constant", "template"):
            raise BadTaskParameter(f"{where}.type", f"must be constant or template, got {kind!r}"[:120])
        value = item.get("value")
        if not isinstance(value, str):
            raise BadTaskParameter(f"{where}.value", "must be a string")
        param_type = item.get("param_type")
        if param_type == "input" or (param_type is None and item.get("dataset") and kind == "template"):
            inputs.extend(_input_stream(item, where))
        if param_type == "output":
            dataset = item.get("dataset")
            if not isinstance(dataset, str) or not dataset:
                raise BadTaskParameter(f"{where}.dataset", "an output needs its dataset name")
            outputs.append(
                OutputStream(
                    dataset,
                    value,
                    f"OUTPUT{len(outputs)}",
                    _str(item, "container", None, 255),
                    _str(item, "destination", None, 128) or None,
                )
            )
        if item.get("hidden") is True:
            continue
        match = re.match(r"^-a\s+(\S+)$", value.strip())
        if match and kind == "constant":
            archives.append(match.group(1))
        parts.append(value if item.get("padding") is False else value + " ")
    if len(inputs) > 20:
        raise BadTaskParameter("jobParameters", "names more than 20 input datasets")
    return "".join(parts).rstrip(" "), outputs, archives, inputs


def _log_stream(params: Mapping[str, Any]) -> OutputStream | None:
    log = params.get("log")
    if log is None:
        return None
    if not isinstance(log, dict):
        raise BadTaskParameter("log", "must be an object with dataset and value")
    dataset, value = log.get("dataset"), log.get("value")
    if not isinstance(dataset, str) or not dataset:
        raise BadTaskParameter("log.dataset", "must be a dataset name")
    if not isinstance(value, str) or "${SN" not in value:
        raise BadTaskParameter("log.value", "must be an LFN template with ${SN}")
    return OutputStream(
        dataset, value, "LOG", _str(log, "container", None, 255), _str(log, "destination", None, 128) or None
    )


def _inputs(
    params: Mapping[str, Any], streams: list[InputStream]
) -> tuple[list[tuple[str, int | None, int | None]], int, int | None]:
    """Pseudo input files and how many make a job (files, and events when split by events).

    With input datasets there are none yet: the files come from the data management system.
    """
    pfns = params.get("pfnList")
    if streams:
        if pfns is not None:
            raise BadTaskParameter("pfnList", "cannot be given with an input dataset")
        return [], _int(params, "nFilesPerJob", 1, 10000, 1) or 1, None
    if pfns is not None:
        if not isinstance(pfns, list) or not pfns or not all(isinstance(p, str) and p for p in pfns):
            raise BadTaskParameter("pfnList", "must be a non-empty list of file names")
        n_files = _int(params, "nFiles", 1, MAX_INPUT_FILES, len(pfns)) or len(pfns)
        files_per_job = _int(params, "nFilesPerJob", 1, 10000, 1) or 1
        chosen = pfns[:n_files]
        if len(chosen) > MAX_INPUT_FILES:
            raise BadTaskParameter("pfnList", f"has more than {MAX_INPUT_FILES} files")
        return [(p[:1000], None, None) for p in chosen], files_per_job, None
    if not params.get("noInput"):
        raise BadTaskParameter(
            "noInput", "a task without input files must say noInput (prun --nJobs), or give pfnList"
        )
    n_events = _int(params, "nEvents", 1, 10**12, None)
    per_job = _int(params, "nEventsPerJob", 1, 10**12, None)
    if n_events is None:
        n_jobs = _int(params, "nJobs", 1, MAX_INPUT_FILES, 1) or 1
        return [("pseudo_lfn", None, None) for _ in range(n_jobs)], 1, None
    events = per_job or n_events
    n_jobs = math.ceil(n_events / events)
    if n_jobs > MAX_INPUT_FILES:
        raise BadTaskParameter("nEvents", f"would make {n_jobs} jobs, at most {MAX_INPUT_FILES} allowed")
    files: list[tuple[str, int | None, int | None]] = []
    for index in range(n_jobs):
        start = index * events
        files.append(("pseudo_lfn", start, min(start + events, n_events) - 1))
    return files, 1, events


def _gb_per_job(params: Mapping[str, Any], streams: list[InputStream]) -> int | None:
    """prun --nGBPerJob: an input size per job instead of a number of files (prun sends it only
    when given as a number; "MAX", its default, is not sent)."""
    gb = _int(params, "nGBPerJob", 1, 100000, None)
    if gb is None:
        return None
    if not streams:
        raise BadTaskParameter("nGBPerJob", "needs an input dataset (--inDS)")
    if params.get("nFilesPerJob") is not None:
        raise BadTaskParameter("nGBPerJob", "cannot be given with nFilesPerJob")
    return gb


#: Task parameters that make a task event-service (as prun --eventService and JEDI take them).
EVENT_SERVICE_KEYS = ("nEventsPerRange", "nEventsPerWorker", "esProcessingType")
#: Consumer jobs one job set may have.
MAX_ES_CONSUMERS = 100


def _event_service(
    params: Mapping[str, Any], events_per_job: int | None, streams: list[InputStream]
) -> EventService | None:
    if not any(key in params for key in EVENT_SERVICE_KEYS):
        return None
    per_range = (
        _int(params, "nEventsPerRange", 1, 10**9, None) or _int(params, "nEventsPerWorker", 1, 10**9, 1) or 1
    )
    per_file = _int(params, "nEventsPerFile", 1, 10**9, None)
    uses_files = bool(streams) or params.get("pfnList") is not None
    if uses_files and per_file is None:
        raise BadTaskParameter(
            "nEventsPerFile", "an event-service task over input files must say how many events each has"
        )
    if not uses_files and events_per_job is None:
        raise BadTaskParameter(
            "nEvents", "an event-service task without input files needs nEvents (its events to split)"
        )
    merge = params.get("esmergeSpec")
    if merge is not None and not isinstance(merge, dict):
        raise BadTaskParameter("esmergeSpec", "must be an object with transPath and jobParameters")
    merge = merge or {}
    return EventService(
        events_per_range=per_range,
        consumers=_int(params, "nEsConsumers", 1, MAX_ES_CONSUMERS, 1) or 1,
        max_attempt=_int(params, "maxAttemptES", 1, MAX_ATTEMPTS, 3) or 3,
        events_per_file=per_file,
        processing_type=_str(params, "esProcessingType", None, 64),
        merge_trans_path=_str(merge, "transPath", None, 250),
        merge_job_parameters=_str(merge, "jobParameters", None, 4000),
    )


def _build_step(params: Mapping[str, Any], base_url: str) -> BuildStep | None:
    spec = params.get("buildSpec")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BadTaskParameter("buildSpec", "must be an object")
    archive = spec.get("archiveName")
    if not isinstance(archive, str) or not archive:
        raise BadTaskParameter("buildSpec.archiveName", "must name the uploaded sandbox")
    job_params = spec.get("jobParameters")
    if not isinstance(job_params, str):
        raise BadTaskParameter("buildSpec.jobParameters", "must be a string")
    trans = _str(spec, "transPath", f"{base_url}/{BUILD_SCRIPT}") or ""
    label = _str(spec, "prodSourceLabel", "panda") or "panda"
    return BuildStep(archive, job_params, trans, label)


#: Deepest nesting of a task parameter dict (prun and pathena send 4 or 5 levels); the stored
#: copy is re-encoded, and stdlib JSON fails with RecursionError around 1000.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """Nesting depth of dicts and lists, without recursion (the input may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def plan_task(params: Any, base_url: str) -> TaskPlan:
    """Check ``params`` and make the plan; raise :class:`BadTaskParameter` on the first problem."""
    if not isinstance(params, dict):
        raise BadTaskParameter("task_parameters", "must be an object")
    if _depth(params) > MAX_DEPTH:
        raise BadTaskParameter("task_parameters", f"is nested deeper than {MAX_DEPTH} levels")
    name = _str(params, "taskName", limit=255)
    if not name or not name.strip("/"):
        raise BadTaskParameter("taskName", "is required (prun and pathena set it from --outDS)")
    if not re.fullmatch(r"[A-Za-z0-9._\-:/]+", name):
        raise BadTaskParameter("taskName", "may contain only letters, digits and . _ - : /")
    template, outputs, archives, streams = build_template(params.get("jobParameters"))
    inputs, files_per_job, events_per_job = _inputs(params, streams)
    gb_per_job = _gb_per_job(params, streams)
    build = _build_step(params, base_url)
    if build is not None:
        archives.append(build.archive)
    trans_path = _str(params, "transPath", f"{base_url}/{RUN_SCRIPT}") or ""
    site = _str(params, "site", None, 128)
    if site in ("AUTO", ""):
        site = None
    plan = TaskPlan(
        name=name,
        vo=_str(params, "vo", "atlas", 32) or "atlas",
        label=_str(params, "prodSourceLabel", "user", 20) or "user",
        template=template,
        outputs=outputs,
        log=_log_stream(params),
        inputs=inputs,
        files_per_job=files_per_job,
        events_per_job=events_per_job,
        gb_per_job=gb_per_job,
        site=site,
        excluded_sites=_str_list(params, "excludedSite"),
        processing_type=_str(params, "processingType", None, 64),
        trans_path=trans_path,
        trans_uses=_str(params, "transUses", None, 64),
        trans_home=_str(params, "transHome", None, 128),
        architecture=_str(params, "architecture", None, 250),
        container_name=_str(params, "container_name", None, 200),
        working_group=_str(params, "workingGroup", None, 20),
        core_count=_int(params, "coreCount", 1, 1024, 1) or 1,
        ram_count=_int(params, "ramCount", 0, 10**7, None),
        walltime=_int(params, "maxWalltime", 0, 10**8, None),
        max_attempt=_int(params, "maxAttempt", 1, MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPT) or DEFAULT_MAX_ATTEMPT,
        priority=_int(params, "currentPriority", -(10**6), 10**6, None)
        or _int(params, "taskPriority", -(10**6), 10**6, 1000)
        or 1000,
        source_url=_str(params, "sourceURL", None, 250),
        build=build,
        cache_files=archives,
        input_streams=streams,
        max_files=_int(params, "nFiles", 1, MAX_INPUT_FILES, None) if streams else None,
        event_service=_event_service(params, events_per_job, streams),
    )
    if "${LIB}" in template and build is None:
        raise BadTaskParameter("jobParameters", "uses ${LIB} but the task has no buildSpec")
    return plan


def job_parameters(
    template: str,
    serial: int,
    inputs: list[tuple[str, int | None, int | None]],
    attempt: int,
    lib: str | None = None,
) -> str:
    """Fill one job's placeholders: serial number, input file names, events, library, attempt."""
    names = [lfn for lfn, _, _ in inputs]
    start = inputs[0][1] if inputs and inputs[0][1] is not None else None
    end = inputs[-1][2] if inputs and inputs[-1][2] is not None else None
    values: dict[str, str] = {
        "SN": str(serial),
        "SN/P": f"{serial:06d}",
        "RNDMSEED": str(serial),
        "ATTEMPTNR": str(attempt),
    }
    if start is not None and end is not None:
        values.update(MAXEVENTS=str(end - start + 1), SKIPEVENTS=str(start), FIRSTEVENT=str(start + 1))
    if lib is not None:
        values["LIB"] = lib

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in values:
            return values[key]
        stream, _, decorators = key.partition("/")
        if stream == "IN" and names and not names[0].startswith("pseudo_"):
            if "T" in decorators:
                return str(names)
            return ",".join(names)
        return match.group(0)

    return _JOB_PLACEHOLDER.sub(fill, template)


def output_lfn(template: str, task_id: int, serial: int) -> str:
    """An output or log file name from its template."""
    return (
        template.replace("$JEDITASKID", str(task_id))
        .replace("${SN/P}", f"{serial:06d}")
        .replace("${SN}", str(serial))
    )[:1000]
