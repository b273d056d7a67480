"""HTML for the monitor pages, built from the same dicts the JSON endpoints return.

Plain string building with one escaping helper: every value that came from the database or the
request goes through :func:`esc` (text and attributes), and every URL is built with
``urllib.parse.urlencode``. No template engine, no JavaScript needed to read a page; the one
script only offers auto-refresh. The chart is an SVG drawn here, so it is in the page as soon as
the HTML is, and a browser test can find its bars.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pandawms import __version__
from pandawms.monitor.params import STATUSES
from pandawms.monitor.queries.common import STATUS_ORDER, status_sort_key

BASE = "/monitor"
NAV = (
    ("dashboard", "Dashboard", ""),
    ("jobs", "Jobs", "/jobs"),
    ("tasks", "Tasks", "/tasks"),
    ("queues", "Queues", "/queues"),
    ("daemon", "Daemon", "/daemon"),
)


def esc(value: Any) -> str:
    """Text for HTML: escaped, with '–' for nothing."""
    if value is None or value == "":
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value), quote=True)


def url(path: str, params: Mapping[str, Any] | None = None) -> str:
    """A monitor URL (escaped for an attribute) with ``params`` (None values dropped)."""
    query = urllib.parse.urlencode(
        {k: v for k, v in (params or {}).items() if v is not None and v != ""}, doseq=True
    )
    return html.escape(BASE + path + (f"?{query}" if query else ""), quote=True)


def status_class(status: Any) -> str:
    """A CSS class for a job status (only letters survive, so it is safe as a class name)."""
    return "st-" + re.sub(r"[^a-z]", "", str(status or "").lower())


def badge(status: Any) -> str:
    return f'<span class="badge {status_class(status)}">{esc(status)}</span>'


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    """'5 min ago', for times a shifter compares with now."""
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def layout(
    title: str, active: str, body: str, json_href: str, now: dt.datetime, refresh: bool = False
) -> bytes:
    """The page frame: navigation, title, body, the JSON link and the footer."""
    nav = "".join(
        f'<a href="{url(path)}" class="{"active" if key == active else ""}">{label}</a>'
        for key, label, path in NAV
    )
    refresh_box = (
        '<label class="refresh"><input type="checkbox" id="autorefresh"> auto-refresh 30 s</label>'
        if refresh
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · pandawms monitor</title>
<link rel="stylesheet" href="{BASE}/static/monitor.css">
<script src="{BASE}/static/monitor.js" defer></script>
</head><body>
<header><span class="brand">pandawms</span><nav>{nav}</nav>{refresh_box}</header>
<main>
<h1>{esc(title)}</h1>
{body}
</main>
<footer>pandawms {esc(__version__)} · page made {esc(now)} UTC ·
<a href="{html.escape(json_href, quote=True)}" id="json-link">this page as JSON</a> ·
<a href="/metrics">metrics</a></footer>
</body></html>
"""
    return page.encode()


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", row_classes: Sequence[str] = ()
) -> str:
    """An HTML table; cells must already be escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def hbar(counts: Mapping[str, int], total: int | None = None) -> str:
    """A horizontal stacked bar of counts by status (widths in percent)."""
    total = total if total is not None else sum(counts.values())
    if not total:
        return '<div class="hbar empty"></div>'
    parts = []
    for status, n in sorted(counts.items(), key=lambda kv: status_sort_key(kv[0])):
        if n:
            parts.append(
                f'<span class="{status_class(status)}" style="width:{100.0 * n / total:.2f}%" '
                f'title="{esc(status)}: {n}"></span>'
            )
    return f'<div class="hbar">{"".join(parts)}</div>'


def timeline_svg(timeline: Mapping[str, Any], width: int = 960, height: int = 280) -> str:
    """A stacked bar chart of status changes per time bucket, as inline SVG."""
    buckets = timeline["buckets"]
    left, right, top, bottom = 56, 10, 10, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(b["counts"].values()) for b in buckets]
    peak = max(totals or [0])
    scale_max = _nice_ceiling(peak)
    n = max(len(buckets), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.8, 1.0)
    out = [
        f'<svg id="timeline-chart" class="chart" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="status changes per {timeline["bucket_seconds"] // 60} minutes">'
    ]
    for i in range(5):
        value = scale_max * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{int(value)}</text>')
    label_every = max(1, n // 8)
    for i, bucket in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        start = bucket["start"]
        when = start.strftime("%H:%M") if isinstance(start, dt.datetime) else esc(start)
        for status, count in sorted(bucket["counts"].items(), key=lambda kv: status_sort_key(kv[0])):
            if not count or not scale_max:
                continue
            h = plot_h * count / scale_max
            y -= h
            out.append(
                f'<rect class="bar {status_class(status)}" data-status="{esc(status)}" data-count="{count}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{when} {esc(status)}: {count}</title></rect>"
            )
        if i % label_every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{when}</text>'
            )
    out.append(
        f'<line class="axisline" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    statuses = sorted({s for b in buckets for s in b["counts"]}, key=status_sort_key)
    lx = left
    for status in statuses:
        out.append(
            f'<rect class="{status_class(status)}" x="{lx}" y="{height - 16}" width="10" height="10"/>'
            f'<text class="legend" x="{lx + 14}" y="{height - 7}">{esc(status)}</text>'
        )
        lx += 24 + 7 * len(status)
    if not peak:
        out.append(
            f'<text class="legend" x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
            "no status changes in this window</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _nice_ceiling(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        candidate = int(step * magnitude)
        if candidate >= value:
            return candidate + (-candidate % 4)
    return value


def queue_link(name: Any) -> str:
    """A link to a queue's page (or '–')."""
    if not name or name == "(no queue)":
        return esc(name)
    return f'<a href="{url("/queue/" + urllib.parse.quote(str(name), safe=""))}">{esc(name)}</a>'


def task_link(task_id: Any) -> str:
    """A link to a task's page (or '–')."""
    if task_id is None:
        return esc(None)
    return f'<a href="{url("/task/" + str(int(task_id)))}">{int(task_id)}</a>'


def job_link(panda_id: Any) -> str:
    """A link to a job's page."""
    return f'<a href="{url("/job/" + str(int(panda_id)))}">{int(panda_id)}</a>'


def _jobs_link(text: str, **params: Any) -> str:
    return f'<a href="{url("/jobs", params)}">{text}</a>'


def status_columns(counts_by_row: Iterable[Mapping[str, int]]) -> list[str]:
    """The statuses present in any row, in lifecycle order."""
    seen = {s for counts in counts_by_row for s, n in counts.items() if n}
    return sorted(seen, key=status_sort_key)


# --- pages --------------------------------------------------------------------------------


def dashboard(data: Mapping[str, Any]) -> bytes:
    now = data["now"]
    summary = data["summary"]
    by_status: dict[str, int] = summary["by_status"]
    by_queue: dict[str, dict[str, int]] = summary["by_queue"]
    hours = data["hours"]
    tiles = (
        "".join(
            f'<a class="tile {status_class(s)}" href="{url("/jobs", {"status": s})}"><span class="n">{n}</span>'
            f'<span class="l">{esc(s)}</span></a>'
            for s, n in by_status.items()
        )
        or '<p class="note">No live jobs.</p>'
    )
    windows = " ".join(
        f'<a href="{url("", {"hours": h})}" class="{"active" if h == hours else ""}">{h} h</a>'
        for h in (1, 6, 24, 72)
    )
    columns = status_columns(by_queue.values())
    rows = []
    for queue, counts in by_queue.items():
        total = sum(counts.values())
        queue_cell = (
            f'<a href="{url("/queue/" + urllib.parse.quote(queue, safe=""))}">{esc(queue)}</a>'
            if queue != "(no queue)"
            else esc(queue)
        )
        cells = [queue_cell]
        for s in columns:
            n = counts.get(s, 0)
            cells.append(
                _jobs_link(str(n), status=s, queue=None if queue == "(no queue)" else queue) if n else ""
            )
        cells += [str(total), hbar(counts, total)]
        rows.append(cells)
    totals = (
        ["<b>total</b>"]
        + [f"<b>{by_status.get(s, 0)}</b>" for s in columns]
        + [f"<b>{summary['total']}</b>", hbar(by_status)]
    )
    rows.append(totals)
    queue_table = (
        table(
            ["queue", *[esc(s) for s in columns], "total", "share"],
            rows,
            "counts",
        )
        if by_queue
        else ('<p class="note">No live jobs.</p>')
    )
    body = f"""
<section><h2>Live jobs by status</h2><div class="tiles" id="status-tiles">{tiles}</div>
<p class="note">Counted {esc(summary["at"])} UTC from the live table (final jobs move to the archive after
archive_delay). Click a number for the jobs.</p></section>
<section><h2>Status changes over the last {hours} h</h2>
<p class="windows">window: {windows} · one bar per {data["timeline"]["bucket_seconds"] // 60} min, from the job status log</p>
{timeline_svg(data["timeline"])}</section>
<section><h2>Live jobs by queue and status</h2>{queue_table}</section>
"""
    return layout(
        "Dashboard",
        "dashboard",
        body,
        url("/api/dashboard", {"hours": hours}).replace("&amp;", "&"),
        now,
        refresh=True,
    )


def _filter_form(f: Mapping[str, Any]) -> str:
    chosen = set(f.get("status") or [])
    options = "".join(
        f'<option value="{s}"{" selected" if s in chosen else ""}>{s}</option>'
        for s in STATUS_ORDER
        if s in STATUSES
    )
    tables = "".join(
        f'<option value="{t}"{" selected" if f.get("table") == t else ""}>{t}</option>'
        for t in ("live", "archive", "all")
    )

    def field(name: str, label: str, size: int = 14) -> str:
        value = f.get(name)
        shown = "" if value is None else html.escape(str(value), quote=True)
        return f'<label>{label} <input name="{name}" value="{shown}" size="{size}"></label>'

    return f"""<form class="filters" method="get" action="{BASE}/jobs" id="job-filters">
<label>status <select name="status" multiple size="3">{options}</select></label>
{field("queue", "queue")}{field("task", "task", 10)}{field("user", "user")}
{field("hours", "last hours", 4)}{field("since", "since (UTC)", 16)}{field("until", "until (UTC)", 16)}
<label>table <select name="table">{tables}</select></label>
{field("limit", "per page", 4)}
<button type="submit">show</button> <a href="{BASE}/jobs">clear</a></form>"""


def job_rows(jobs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    classes = []
    for j in jobs:
        pid = j["PandaID"]
        queue = j.get("computingSite")
        task = j.get("jediTaskID")
        rows.append(
            [
                job_link(pid),
                badge(j.get("jobStatus")),
                queue_link(queue),
                task_link(task),
                esc(j.get("prodUserName")),
                f'<span class="name">{esc(j.get("jobName"))}</span>',
                esc(j.get("currentPriority")),
                esc(j.get("attemptNr")),
                esc(j.get("creationTime")),
                esc(j.get("modificationTime")),
                f'<span class="err">{esc(j.get("error"))}</span>' if j.get("error") else "",
            ]
        )
        classes.append("failed" if j.get("jobStatus") == "failed" else "")
    return table(
        [
            "PandaID",
            "status",
            "queue",
            "task",
            "user",
            "name",
            "prio",
            "attempt",
            "created",
            "modified",
            "error",
        ],
        rows,
        "jobs",
        classes,
    )


def jobs_page(data: Mapping[str, Any]) -> bytes:
    f = data["filters"]
    nav = []
    if data.get("newer"):
        nav.append(f'<a href="{html.escape(data["first"], quote=True)}">newest</a>')
        nav.append(f'<a id="newer" href="{html.escape(data["newer"], quote=True)}">← newer</a>')
    if data.get("older"):
        nav.append(f'<a id="older" href="{html.escape(data["older"], quote=True)}">older →</a>')
    total = data.get("total")
    count = f"{total} matching live jobs · " if total is not None else ""
    body = f"""{_filter_form(f)}
<p class="note">{count}{len(data["jobs"])} shown, newest first · {data["elapsed_ms"]:.0f} ms ·
JSON: <a href="{html.escape(data["json"], quote=True)}">{html.escape(data["json"])}</a></p>
{job_rows(data["jobs"]) if data["jobs"] else '<p class="note" id="no-jobs">No jobs match.</p>'}
<p class="pager">{" ".join(nav)}</p>"""
    return layout("Jobs", "jobs", body, data["json"], data["now"])


def _kv_table(items: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="{cls}">{rows}</table>'


def errors_table(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return '<p class="note">No errors recorded.</p>'
    return table(
        ["source", "code", "meaning", "diagnostic"],
        [
            [
                esc(e["source"]),
                esc(e["code"] or ""),
                esc(e["meaning"]),
                f'<span class="diag">{esc(e["diag"])}</span>',
            ]
            for e in errors
        ],
        "errors",
    )


def why_block(why: Mapping[str, Any]) -> str:
    reasons = "".join(f"<li>{esc(r)}</li>" for r in why.get("reasons", []))
    facts = why.get("facts") or {}
    fact_rows = _kv_table(
        (k, esc(v if not isinstance(v, list | dict) else json.dumps(v, default=str)))
        for k, v in facts.items()
    )
    return f"""<section class="why" id="why"><h2>Why has it not run?</h2>
<p class="verdict">{esc(why.get("verdict"))}</p><ul>{reasons}</ul>{fact_rows}</section>"""


def event_ranges_block(counts: Mapping[str, int], ranges: Sequence[Mapping[str, Any]]) -> str:
    """An event-service job's ranges: how many in each state, and each one with its attempts."""
    total = sum(counts.values())
    shown = "" if len(ranges) >= total else f' <span class="note">(first {len(ranges)} of {total})</span>'
    rows = [
        [
            esc(r["eventRangeID"]),
            badge(r["status"]),
            esc(r["LFN"]),
            f"{esc(r['startEvent'])}&ndash;{esc(r['lastEvent'])}",
            esc(r["attemptNr"]),
            f"{esc(r['failedAttempt'])} of {esc(r['maxAttempt'])}",
            job_link(r["PandaID"]) if r["PandaID"] else "",
            esc(r["holder"]),
            esc(r["errorDiag"] or r["errorCode"]),
        ]
        for r in ranges
    ]
    return (
        '<section id="event-ranges"><h2>Event ranges</h2>'
        + hbar(counts, total)
        + '<p class="range-counts">'
        + ", ".join(f"{esc(status)}: {n}" for status, n in sorted(counts.items()))
        + "</p>"
        + shown
        + table(
            ["range", "status", "file", "events", "handed out", "failed", "held by", "holder", "error"],
            rows,
            "event-ranges",
        )
        + "</section>"
    )


def job_page(data: Mapping[str, Any]) -> bytes:
    job = data["job"]
    status = job.get("jobStatus")
    pid = data["PandaID"]
    headline = ""
    if data.get("error_summary") and status in ("failed", "cancelled", "closed"):
        headline = f'<div class="failure" id="failure-reason"><b>Why it {esc(status)}:</b> {esc(data["error_summary"])}</div>'
    elif status in ("failed", "cancelled", "closed"):
        headline = (
            f'<div class="failure" id="failure-reason"><b>{esc(status)}</b>, no error code recorded.</div>'
        )
    key = [
        ("status", badge(status)),
        (
            "queue",
            queue_link(job.get("computingSite")),
        ),
        (
            "task",
            task_link(job.get("jediTaskID")),
        ),
        ("user", esc(job.get("prodUserName"))),
        ("name", esc(job.get("jobName"))),
        ("label", esc(job.get("prodSourceLabel"))),
        ("priority", esc(job.get("currentPriority"))),
        ("attempt", f"{esc(job.get('attemptNr'))} of {esc(job.get('maxAttempt'))}"),
        ("created", esc(job.get("creationTime"))),
        ("started", esc(job.get("startTime"))),
        ("ended", esc(job.get("endTime"))),
        ("last modified", esc(job.get("modificationTime"))),
        ("stored in", esc(data["table"]) + " table"),
    ]
    files = data["files"]
    file_table = (
        table(
            ["lfn", "type", "status", "dataset", "scope", "size", "checksum"],
            [
                [
                    esc(f.get("lfn")),
                    esc(f.get("type")),
                    esc(f.get("status")),
                    esc(f.get("dataset")),
                    esc(f.get("scope")),
                    esc(f.get("fsize")),
                    esc(f.get("checksum")),
                ]
                for f in files
            ],
            "files",
        )
        if files
        else '<p class="note">No files.</p>'
    )
    history = (
        table(
            ["time (UTC)", "from", "to", "queue", "host", "attempt", "reason"],
            [
                [
                    esc(h["modificationTime"]),
                    esc(h.get("oldStatus")),
                    badge(h["jobStatus"]),
                    esc(h.get("computingSite")),
                    esc(h.get("modificationHost")),
                    esc(h.get("attemptNr")),
                    esc(h.get("reason")),
                ]
                for h in data["history"]
            ],
            "history",
        )
        if data["history"]
        else '<p class="note">No status history.</p>'
    )
    attrs = _kv_table(
        ((k, esc(v)) for k, v in sorted(job.items()) if v not in (None, "", "NULL")), "kv attrs"
    )
    extra = ""
    if data.get("why"):
        extra += why_block(data["why"])
    if data.get("jobParameters"):
        extra += (
            f"<details><summary>job parameters</summary><pre>{esc(data['jobParameters'])}</pre></details>"
        )
    if data.get("worker_logs"):
        extra += (
            "<section><h2>worker logs</h2>"
            + table(
                ["worker", "kind", "file", "size"],
                [
                    [
                        f"{esc(w['harvesterID'])} / {esc(w['workerID'])}",
                        esc(w["kind"]),
                        f'<a href="{esc(w["path"])}">{esc(w["fileName"])}</a>',
                        esc(w["fileSize"]),
                    ]
                    for w in data["worker_logs"]
                ],
                "worker-logs",
            )
            + "</section>"
        )
    if data.get("event_range_counts"):
        extra += event_ranges_block(data["event_range_counts"], data.get("event_ranges") or [])
    if data.get("pilot_log_tail"):
        extra += (
            f"<details><summary>pilot log (tail)</summary><pre>{esc(data['pilot_log_tail'])}</pre></details>"
        )
    body = f"""{headline}
<section>{_kv_table(key, "kv key")}</section>
{extra}
<section><h2>Errors</h2>{errors_table(data["errors"])}</section>
<section><h2>Status history</h2>{history}</section>
<section><h2>Files</h2>{file_table}</section>
<section><details open><summary>All attributes</summary>{attrs}</details></section>"""
    return layout(f"Job {pid}", "jobs", body, f"{BASE}/api/job/{pid}", data["now"])


def _progress(fraction: float) -> str:
    return f'<div class="progress"><span style="width:{100 * fraction:.1f}%"></span><b>{100 * fraction:.1f}%</b></div>'


def _task_history(history: Sequence[Mapping[str, Any]]) -> str:
    """Status moves and operator changes (priority, site, share...), newest first."""
    if not history:
        return ""
    rows = [
        [esc(h["time"]), esc(h["what"]), esc(h["old"]), esc(h["new"]), esc(h["by"]), esc(h["note"])]
        for h in history
    ]
    return f"<section><h2>History</h2>{table(['time (UTC)', 'change', 'from', 'to', 'by', 'note'], rows, 'history')}</section>"


def _staging(requests: Sequence[Mapping[str, Any]]) -> str:
    """The task's data carousel requests: its input staged from tape, file by file."""
    if not requests:
        return ""
    rows = []
    for r in requests:
        total, staged = r.get("total_files"), r.get("staged_files") or 0
        fraction = staged / total if total else 0.0
        rows.append(
            [
                esc(r["request_id"]),
                esc(r["dataset"]),
                esc(r["status"]),
                esc(r.get("source_rse")),
                esc(r.get("destination_rse")),
                esc(r.get("ddm_rule_id")),
                f"{staged}/{esc(total)}",
                _progress(fraction),
                esc(r.get("start_time")),
                esc(r.get("end_time")),
            ]
        )
    headers = [
        "request",
        "dataset",
        "status",
        "source",
        "destination",
        "rule",
        "files",
        "staged",
        "started",
        "ended",
    ]
    return f"<section><h2>Staging from tape (data carousel)</h2>{table(headers, rows, 'staging')}</section>"


def task_page(data: Mapping[str, Any]) -> bytes:
    tid = data["jediTaskID"]
    counts = data["counts"]
    key = [
        ("task status", esc(data.get("status"))),
        ("task name", esc(data.get("taskName"))),
        ("jobs", str(data["total"])),
        ("finished", _progress(data["finished_fraction"])),
        ("done (any final status)", _progress(data["done_fraction"])),
        ("failed", f"{100 * data['failed_fraction']:.1f}%"),
        (
            "users",
            ", ".join(f'<a href="{url("/jobs", {"user": u})}">{esc(u)}</a>' for u in data["users"])
            or esc(None),
        ),
        ("first created", esc(data["first_created"])),
        ("last modified", esc(data["last_modified"])),
    ]
    events = data.get("events") or {}
    if events.get("nEvents"):
        done = events.get("nEventsFinished", 0)
        key.insert(
            3, ("events finished", f"{done} of {events['nEvents']} " + _progress(done / events["nEvents"]))
        )
    tiles = "".join(
        f'<a class="tile {status_class(s)}" href="{url("/jobs", {"task": tid, "status": s, "table": "all"})}">'
        f'<span class="n">{n}</span><span class="l">{esc(s)}</span></a>'
        for s, n in counts.items()
    )
    columns = status_columns(data["queues"].values())
    rows = [
        [esc(q)] + [str(c.get(s, "")) if c.get(s) else "" for s in columns] + [str(sum(c.values())), hbar(c)]
        for q, c in data["queues"].items()
    ]
    body = f"""<section>{hbar(counts)}<div class="tiles">{tiles}</div></section>
<section>{_kv_table(key, "kv key")}</section>
<section><h2>By queue</h2>{table(["queue", *[esc(s) for s in columns], "total", "share"], rows, "counts")}</section>
<p><a href="{url("/jobs", {"task": tid, "table": "all"})}">all jobs of this task</a> (live and archived)</p>
{_staging(data.get("staging") or [])}
{_task_history(data.get("history") or [])}"""
    return layout(f"Task {tid}", "tasks", body, f"{BASE}/api/task/{tid}", data["now"], refresh=True)


def tasks_page(data: Mapping[str, Any]) -> bytes:
    rows = []
    for t in data["tasks"]:
        tid = t["jediTaskID"]
        rows.append(
            [
                task_link(tid),
                badge(t["status"]) if t.get("status") else esc(None),
                esc(t.get("taskName")),
                esc(t.get("user")),
                str(t["total"]),
                _progress(t["finished_fraction"]),
                hbar(t["counts"]),
                " ".join(f"{badge(s)}&nbsp;{n}" for s, n in t["counts"].items()),
            ]
        )
    user = data.get("user")
    body = f"""<form class="filters" method="get" action="{BASE}/tasks"><label>user <input name="user" value="{html.escape(user or "", quote=True)}"></label>
<label><input type="checkbox" name="archive" value="1"{" checked" if data.get("archive") else ""}> include archive</label>
<button type="submit">show</button></form>
<p class="note">The {len(data["tasks"])} most recent tasks (by their newest job).</p>
{table(["task", "status", "name", "user", "jobs", "finished", "share", "by status"], rows, "tasks") if rows else '<p class="note">No tasks.</p>'}"""
    return layout("Tasks", "tasks", body, data["json"], data["now"], refresh=True)


def queues_page(data: Mapping[str, Any]) -> bytes:
    rows = []
    for q in data["queues"]:
        c = q["counts"]
        rows.append(
            [
                f'<a href="{url("/queue/" + urllib.parse.quote(q["name"], safe=""))}">{esc(q["name"])}</a>',
                f'<span class="qs qs-{status_class(q.get("status"))[3:]}">{esc(q.get("status"))}</span>',
                esc(q.get("state")),
                esc(q.get("type")),
                str(c.get("activated", 0)),
                str(c.get("running", 0) + c.get("starting", 0)),
                str(c.get("failed", 0)),
                str(q["total"]),
                hbar(c, q["total"]),
            ]
        )
    body = (
        table(
            ["queue", "status", "state", "type", "activated", "running", "failed", "live jobs", "share"],
            rows,
            "queues",
        )
        if rows
        else '<p class="note">No queues defined: load them with <code>pandawms queues load FILE</code>.</p>'
    )
    return layout("Queues", "queues", body, f"{BASE}/api/queues", data["now"], refresh=True)


def worker_nodes_table(nodes: Sequence[Mapping[str, Any]], now: dt.datetime) -> str:
    """The hardware pilots reported from the queue's nodes (CPU, memory, disk, GPUs)."""
    if not nodes:
        return '<p class="note">No pilot has reported its worker node for this queue.</p>'
    rows = []
    for n in nodes:
        gpus = ", ".join(f"{g['count']}× {g['vendor']} {g['model']}" for g in n.get("gpus") or [])
        cores = f"{n.get('n_sockets') or '?'}×{n.get('cores_per_socket') or '?'}×{n.get('threads_per_core') or '?'}"
        rows.append(
            [
                esc(n["host_name"]),
                esc(n["site"]),
                esc(n["cpu_model"]),
                esc(n.get("n_logical_cpus")),
                esc(cores),
                esc(n.get("cpu_architecture_level") or n.get("cpu_architecture")),
                esc(n.get("total_memory")),
                esc(n.get("total_local_disk")),
                esc(gpus or "–"),
                esc(ago(n.get("queue_last_seen"), now)),
            ]
        )
    return table(
        [
            "host",
            "site",
            "CPU model",
            "logical CPUs",
            "sockets×cores×threads",
            "arch level",
            "memory (MB)",
            "disk (GB)",
            "GPUs",
            "last seen",
        ],
        rows,
    )


def queue_page(data: Mapping[str, Any]) -> bytes:
    name = data["name"]
    now = data["now"]
    d = data.get("definition") or {}
    counts = data["counts"]
    warn = ""
    if not data["defined"]:
        warn = '<div class="failure">This queue is not defined: pilots asking for it get no jobs. Load its definition.</div>'
    elif data.get("inactive_reason"):
        warn = f'<div class="failure">{esc(data["inactive_reason"])}</div>'
    key = [
        ("status", esc(d.get("status"))),
        ("state", esc(d.get("state"))),
        ("type", esc(d.get("type"))),
        ("cores", esc(d.get("corecount"))),
        ("max RSS (MB)", esc(d.get("maxrss"))),
        ("max time (s)", esc(d.get("maxtime"))),
        ("cloud / site", f"{esc(d.get('cloud'))} / {esc(d.get('site'))}"),
        ("definition updated", esc(d.get("updated"))),
        ("last heartbeat seen", f"{esc(data['last_heartbeat'])} ({ago(data['last_heartbeat'], now)})"),
        (
            "target slots",
            ", ".join(
                f"{int(t['numSlots'])} ({esc(t['gshare'] or 'any share')}, {esc(t['resourceType'] or 'any type')})"
                for t in data.get("target_slots") or []
            )
            or "none",
        ),
        ("activated", _jobs_link(str(counts.get("activated", 0)), queue=name, status="activated")),
        ("running", _jobs_link(str(counts.get("running", 0)), queue=name, status="running")),
        ("failed (live table)", _jobs_link(str(counts.get("failed", 0)), queue=name, status="failed")),
    ]
    tiles = "".join(
        f'<a class="tile {status_class(s)}" href="{url("/jobs", {"queue": name, "status": s})}">'
        f'<span class="n">{n}</span><span class="l">{esc(s)}</span></a>'
        for s, n in counts.items()
    )
    definition = d.get("data")
    body = f"""{warn}<section>{hbar(counts)}<div class="tiles">{tiles}</div></section>
<section>{_kv_table(key, "kv key")}</section>
<section><h2>Recent failures</h2>{job_rows(data["recent_failures"]) if data["recent_failures"] else '<p class="note">No failed jobs in the live table.</p>'}</section>
<section><h2>Worker nodes</h2>{worker_nodes_table(data.get("worker_nodes") or [], now)}</section>
<details><summary>definition (schedconfig JSON)</summary><pre>{esc(json.dumps(definition, indent=2, sort_keys=True, default=str)) if definition else "–"}</pre></details>"""
    return layout(
        f"Queue {name}",
        "queues",
        body,
        f"{BASE}/api/queue/{urllib.parse.quote(name, safe='')}",
        now,
        refresh=True,
    )


def daemon_page(data: Mapping[str, Any]) -> bytes:
    now = data["now"]
    rows = []
    classes = []
    for t in data["tasks"]:
        outcome = t.get("last_outcome")
        rows.append(
            [
                f'<b>{esc(t["task"])}</b><br><span class="note">{esc(t.get("description"))}</span>',
                f"{int(t['period'])} s",
                "fleet" if t["fleet_wide"] else "node",
                f'{esc(t.get("last_run"))}<br><span class="note">{ago(t.get("last_run"), now)}</span>',
                f'<span class="outcome oc-{status_class(outcome)[3:]}">{esc(outcome)}</span>',
                esc(t.get("last_node")),
                f'<span class="diag">{esc(t.get("last_message"))}</span>',
                esc(t.get("lease_holder")),
                " ".join(f"{esc(o)}:&nbsp;{n}" for o, n in sorted(t["runs_24h"].items())) or "–",
            ]
        )
        classes.append("failed" if outcome not in (None, "ok", "running") else "")
    failures = (
        table(
            ["started", "task", "node", "outcome", "message"],
            [
                [
                    esc(r["started"]),
                    esc(r["task"]),
                    esc(r["node"]),
                    esc(r["outcome"]),
                    f'<span class="diag">{esc(r.get("message"))}</span>',
                ]
                for r in data["recent_failures"]
            ],
            "failures",
        )
        if data["recent_failures"]
        else '<p class="note">No failed runs recently.</p>'
    )
    body = f"""<section>{table(["task", "period", "scope", "last run (UTC)", "outcome", "node", "message", "lease holder", "runs in 24 h"], rows, "daemon", classes)}</section>
<section><h2>Recent failed runs</h2>{failures}</section>"""
    return layout("Daemon", "daemon", body, f"{BASE}/api/daemon", now, refresh=True)


def error_page(status: int, message: str, now: dt.datetime) -> bytes:
    titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 503: "Database unavailable"}
    body = f'<p class="failure" id="error-message">{esc(message)}</p><p><a href="{BASE}">back to the dashboard</a></p>'
    return layout(titles.get(status, "Error"), "", body, BASE + "/api/dashboard", now)
