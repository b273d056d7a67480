"""The web monitor at /monitor and the Prometheus endpoint at /metrics.

Every page has its JSON twin with the same parameters: ``/monitor/<page>?...`` is the HTML,
``/monitor/api/<page>?...`` (or ``?format=json``) the JSON, built from the same dict, so scripts
see what people see. Pages:

=================================  ==========================================================
/monitor?hours=6                   dashboard: live jobs by status and queue, status-change chart
/monitor/jobs?status=&queue=&...   job list: status (comma list), queue, task, user, hours |
                                   since/until (UTC ISO), table=live|archive|all, limit,
                                   before/after=PandaID (keyset paging, newest first)
/monitor/job/<PandaID>             one job: attributes, files, history, errors explained, why
                                   it waits
/monitor/why/<PandaID>             only the "why has it not run" analysis
/monitor/task/<jediTaskID>         one task: jobs by status and queue, progress
/monitor/tasks?user=&archive=1     recent tasks
/monitor/queues, /monitor/queue/X  queues: definition, counts, last heartbeat, recent failures
/monitor/daemon                    daemon tasks: last run, outcome, lease holder, failures
/metrics                           Prometheus text exposition
=================================  ==========================================================

Unknown or malformed parameters get a 400 that names the parameter; a missing job, task or
queue a 404. The app has already applied the API's authentication rules before calling here.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from pandawms.core.queues import worker_nodes
from pandawms.core.runtime import Runtime, utcnow
from pandawms.model.errors import NotFound
from pandawms.monitor import pages, params
from pandawms.monitor.exposition import exposition
from pandawms.monitor.metrics import Registry
from pandawms.monitor.params import BadParam, Query
from pandawms.monitor.queries import daemon as daemon_q
from pandawms.monitor.queries import jobs as jobs_q
from pandawms.monitor.queries import queues as queues_q
from pandawms.monitor.queries import summary as summary_q
from pandawms.monitor.queries import tasks as tasks_q
from pandawms.monitor.queries import timeline as timeline_q
from pandawms.monitor.queries import why as why_q

Reply = tuple[int, bytes, str, list[tuple[bytes, bytes]]]
HTML = "text/html; charset=utf-8"
JSON = "application/json"
_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'",
    ),
]
_NO_CACHE = [(b"cache-control", b"no-cache")]
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_STATIC: dict[str, tuple[bytes, str, str]] = {}
_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(css|js|svg)$")


class NotFoundPage(NotFound):
    """The job, task or queue asked for does not exist."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return str(obj)


def to_json(data: Any) -> bytes:
    """JSON for scripts: datetimes as ISO 8601 UTC (``...Z``), keys sorted as given."""
    return orjson.dumps(
        data,
        default=_json_default,
        option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2,
    )


def _static(name: str) -> Reply:
    """A CSS/JS file shipped in the package, with an ETag; no external CDN anywhere."""
    if not _STATIC_NAME.match(name):
        return 404, b"no such file\n", "text/plain", []
    if name not in _STATIC:
        try:
            body = importlib.resources.files("pandawms.monitor").joinpath("static", name).read_bytes()
        except (FileNotFoundError, OSError):
            return 404, b"no such file\n", "text/plain", []
        suffix = name[name.rfind(".") :]
        _STATIC[name] = (body, _STATIC_TYPES[suffix], hashlib.sha1(body).hexdigest()[:16])
    body, ctype, etag = _STATIC[name]
    return 200, body, ctype, [(b"etag", f'"{etag}"'.encode()), (b"cache-control", b"public, max-age=3600")]


# --- page builders: (rt, query, rest of path) -> data dict --------------------------------


def _dashboard(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ("hours",))
    hours = params.integer(query, "hours", 1, 72, 6) or 6
    summary = summary_q.live_summary(rt)
    return {
        "now": utcnow(),
        "hours": hours,
        "summary": {
            "at": summary.at,
            "total": summary.total,
            "by_status": summary.by_status(),
            "by_queue": summary.by_queue(),
        },
        "timeline": timeline_q.cached_timeline(rt, hours).as_dict(),
    }


def _page_links(query: Query, page: jobs_q.JobPage, api: bool) -> dict[str, str | None]:
    base = "/monitor/api/jobs" if api else "/monitor/jobs"
    keep = {k: v for k, v in query.items() if k not in ("before", "after", "format")}

    def link(**cursor: int) -> str:
        merged: dict[str, Any] = {**keep, **{k: [str(v)] for k, v in cursor.items()}}
        text = urllib.parse.urlencode(merged, doseq=True)
        return base + (f"?{text}" if text else "")

    rows = page.rows
    return {
        "older": link(before=int(rows[-1]["PandaID"])) if rows and page.has_older else None,
        "newer": link(after=int(rows[0]["PandaID"])) if rows and page.has_newer else None,
        "first": link(),
    }


def _jobs(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    f = params.job_filter(query)
    page = jobs_q.list_jobs(rt, f)
    links = _page_links(query, page, api=True)
    html_links = _page_links(query, page, api=False)
    shown = {k: (v if k == "status" else v[-1]) for k, v in query.items() if k != "format"}
    shown["status"] = list(f.statuses)
    return {
        "now": utcnow(),
        "filters": shown,
        "applied": {
            "status": list(f.statuses),
            "queue": f.queue,
            "task": f.task,
            "user": f.user,
            "since": f.since,
            "until": f.until,
            "table": f.table,
            "before": f.before,
            "after": f.after,
            "limit": f.limit,
        },
        "jobs": page.rows,
        "total": page.total,
        "elapsed_ms": round(page.elapsed_ms, 1),
        "older": links["older"],
        "newer": links["newer"],
        "html": {"older": html_links["older"], "newer": html_links["newer"], "first": html_links["first"]},
        "json": links["first"] if not (f.before or f.after) else _self_link("/monitor/api/jobs", query),
    }


def _self_link(base: str, query: Query) -> str:
    text = urllib.parse.urlencode({k: v for k, v in query.items() if k != "format"}, doseq=True)
    return base + (f"?{text}" if text else "")


def _int_path(rest: str, what: str) -> int:
    if not rest.isdigit() or len(rest) > 19:
        raise BadParam(f"{what} must be a positive whole number, got {rest[:40]!r}")
    return int(rest)


def _job(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    panda_id = _int_path(rest, "PandaID")
    data = jobs_q.job_detail(rt, panda_id)
    if data is None:
        raise NotFoundPage(f"no job {panda_id} in the live table or the archive")
    data["now"] = utcnow()
    return data


def _why(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    panda_id = _int_path(rest, "PandaID")
    data = why_q.why_not_running(rt, panda_id)
    if not data.get("found"):
        raise NotFoundPage(f"no job {panda_id}")
    data["now"] = utcnow()
    return data


def _task(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    task_id = _int_path(rest, "jediTaskID")
    data = tasks_q.task_detail(rt, task_id)
    if data is None:
        raise NotFoundPage(f"no jobs of task {task_id}")
    data["now"] = utcnow()
    return data


def _tasks(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ("user", "archive", "limit"))
    user = params.user_name(params.one(query, "user"))
    archive = params.one(query, "archive") in ("1", "true", "yes", "on")
    limit = params.integer(query, "limit", 1, 500, 50) or 50
    return {
        "now": utcnow(),
        "user": user,
        "archive": archive,
        "tasks": tasks_q.task_list(rt, user=user, limit=limit, include_archive=archive),
        "json": _self_link("/monitor/api/tasks", query),
    }


def _queues(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    return {"now": utcnow(), "queues": queues_q.queue_list(rt)}


def _queue(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    name = params.queue_name(urllib.parse.unquote(rest), "queue") or ""
    data = queues_q.queue_detail(rt, name)
    if data is None:
        raise NotFoundPage(f"no queue {name}: not defined and no live jobs use it")
    data["worker_nodes"] = worker_nodes.nodes_of_queue(rt, name, limit=100)
    data["now"] = utcnow()
    return data


def _daemon(rt: Runtime, query: Query, rest: str) -> dict[str, Any]:
    params.check_known(query, ())
    return daemon_q.daemon_overview(rt)


def _why_page(data: dict[str, Any]) -> bytes:
    body = pages.why_block(data) + f'<p><a href="/monitor/job/{int(data["PandaID"])}">the job</a></p>'
    return pages.layout(
        f"Why job {int(data['PandaID'])} waits",
        "jobs",
        body,
        f"/monitor/api/why/{int(data['PandaID'])}",
        data["now"],
    )


def _jobs_html(data: dict[str, Any]) -> bytes:
    view = {**data, **{k: v for k, v in data["html"].items()}}
    return pages.jobs_page(view)


Builder = Callable[[Runtime, Query, str], dict[str, Any]]
#: page name -> (builder, HTML renderer, takes a path argument)
ROUTES: dict[str, tuple[Builder, Callable[[dict[str, Any]], bytes], bool]] = {
    "": (_dashboard, pages.dashboard, False),
    "dashboard": (_dashboard, pages.dashboard, False),
    "jobs": (_jobs, _jobs_html, False),
    "job": (_job, pages.job_page, True),
    "why": (_why, _why_page, True),
    "task": (_task, pages.task_page, True),
    "tasks": (_tasks, pages.tasks_page, False),
    "queues": (_queues, pages.queues_page, False),
    "queue": (_queue, pages.queue_page, True),
    "daemon": (_daemon, pages.daemon_page, False),
}


def _parse_query(scope: Any) -> Query:
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, max_num_fields=100)
    except ValueError as exc:
        raise BadParam(f"malformed query string: {exc}") from None
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _error(status: int, message: str, as_json: bool) -> Reply:
    if as_json:
        return status, to_json({"error": message, "status": status}), JSON, _SECURITY
    return status, pages.error_page(status, message, utcnow()), HTML, _SECURITY


#: Turns an exception into (HTTP status, message, retry later?): the API's error table
#: (:func:`pandawms.api.errors.answer`), handed in by the application.
Explain = Callable[[BaseException], tuple[int, str, bool]]


def render(rt: Runtime, path: str, scope: Any, explain: Explain) -> Reply:
    """Answer one monitor request (runs in a worker thread: it reads the database)."""
    rest = path[len("/monitor") :].strip("/")
    api = rest == "api" or rest.startswith("api/")
    if api:
        rest = rest[4:] if rest.startswith("api/") else ""
    if rest.startswith("static/") and not api:
        return _static(rest[len("static/") :])
    name, _, arg = rest.partition("/")
    as_json = api
    try:
        query = _parse_query(scope)
        as_json = api or params.want_json(query)
        route = ROUTES.get(name)
        if route is None or (route[2] and not arg) or (not route[2] and arg):
            return _error(404, f"no monitor page {path[:200]}", as_json)
        builder, renderer, _ = route
        data = builder(rt, query, arg)
        if as_json:
            return 200, to_json(data), JSON, _SECURITY + _NO_CACHE
        return 200, renderer(data), HTML, _SECURITY + _NO_CACHE
    except Exception as exc:
        status, message, retry = explain(exc)
        status, body, ctype, headers = _error(status, message, as_json)
        if retry:
            headers = headers + [(b"retry-after", str(rt.settings.busy_retry_after).encode())]
        return status, body, ctype, headers


def metrics_text(rt: Runtime, registry: Registry) -> Reply:
    """The Prometheus exposition (runs in a worker thread)."""
    return (
        200,
        exposition(rt, registry).encode(),
        "text/plain; version=0.0.4; charset=utf-8",
        [(b"cache-control", b"no-store")],
    )


def _warm(rt: Runtime) -> bool:
    """Start filling the dashboard caches (once per runtime: the caller keeps the answer)."""
    timeline_q.warm(rt)
    return True


async def handle(app: Any, scope: Any, headers: Any, request_id: str, explain: Explain) -> Reply:
    """Serve /monitor... and /metrics for ``app`` (a PandaApp: ``app.rt`` is its Runtime,
    ``app.metrics`` its request metrics)."""
    rt: Runtime = app.rt
    rt.kept("monitor.warmed", lambda: _warm(rt))
    method = scope.get("method", "GET")
    path: str = scope.get("path", "")
    if method not in ("GET", "HEAD"):
        return 405, b"the monitor is read-only: use GET\n", "text/plain", [(b"allow", b"GET, HEAD")]
    if path == "/metrics":
        reply = await run_in_threadpool(metrics_text, rt, app.metrics)
    else:
        reply = await run_in_threadpool(render, rt, path, scope, explain)
    if method == "HEAD":
        return reply[0], b"", reply[2], reply[3]
    return reply
