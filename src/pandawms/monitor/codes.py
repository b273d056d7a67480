"""What the error codes on a job mean, in words a shifter can act on.

A failed job carries up to seven (code, diagnostic) pairs, one per component that can end a job:
the pilot, the payload (exe), the supervisor, data management (ddm), brokerage, the dispatcher
(the server's watcher) and the task buffer (kills, retries, reassignments). The diagnostics are
free text written by whoever failed the job; the codes are stable numbers whose meaning is
written down here once, so the web page and the terminal view say the same thing.

Pilot codes and their wording follow the PanDA pilot's ``pilot/common/errorcodes.py``; the
server-side codes are the ones :mod:`pandawms.model.errors` defines and the core sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pandawms.core.queues.brokerage import NO_QUEUE
from pandawms.model.errors import PILOT_PANDAKILL, DdmError, DispatcherError, TaskBufferError

#: Well-known pilot error codes (pilotErrorCode).
PILOT_CODES: dict[int, str] = {
    1008: "general pilot error; the batch log of the pilot has the details",
    1098: "not enough local disk space on the worker node",
    1099: "stage-in of an input file failed",
    1100: "replica of an input file not found",
    1103: "no such file or directory",
    1104: "user work directory too large",
    1106: "payload log or stdout file too big",
    1110: "payload setup failed (release, container or environment)",
    1116: "pilot could not download the queue definition (schedconfig)",
    1117: "pilot found the queue definition invalid",
    1124: "output file too large",
    1133: "no storage defined for this activity at the queue",
    1137: "stage-out of an output file failed",
    1141: "md5sum mismatch on an output file",
    1143: "could not make the transform executable",
    PILOT_PANDAKILL: "killed by the PanDA server: the job was killed (user, operator or server) and the "
    "pilot obeyed the tobekilled command",
    1149: "transform could not be downloaded",
    1150: "looping job: no output written for a long time, killed by the pilot",
    1151: "input file transfer timed out",
    1152: "output file transfer timed out",
    1163: "grid proxy not valid",
    1165: "an output file the job declares is missing",
    1168: "total input size too large for the worker node",
    1171: "adler32 checksum mismatch on an input file",
    1172: "adler32 checksum mismatch on an output file",
    1177: "VOMS proxy not valid",
    1186: "software directory does not exist",
    1187: "payload metadata does not exist",
    1190: "file name (LFN) longer than 255 characters",
    1191: "file size is zero",
    1199: "could not create a directory",
    1200: "payload terminated by an unknown kill signal",
    1201: "payload killed by SIGTERM (often the batch system ending the slot)",
    1202: "payload killed by SIGQUIT",
    1203: "payload killed by SIGSEGV (segmentation fault)",
    1204: "payload killed by SIGXCPU (CPU time limit of the batch system)",
    1205: "killed by the user",
    1206: "payload killed by SIGBUS",
    1211: "software installation missing",
    1212: "payload ran out of memory",
    1213: "reached the batch system's wall-time limit",
    1220: "payload failed for an unknown reason; the log file has the details",
    1221: "file already exists",
    1223: "transform failed with bad_alloc (memory)",
    1235: "payload exceeded the maximum memory allowed by the queue",
    1236: "failed by the server",
    1244: "no release candidates found",
    1246: "user tarball could not be downloaded from the PanDA server",
    1300: "not implemented in the pilot",
    1301: "unknown pilot exception",
    1303: "file handling failed",
    1305: "the payload failed: it exited with a non-zero code (see exeErrorCode/transExitCode and the log)",
    1306: "Singularity/Apptainer general failure",
    1309: "Singularity/Apptainer could not mount the image",
    1310: "exception caught during payload execution",
    1315: "unknown transform failure",
    1316: "Rucio service unavailable",
    1317: "exceeded the maximum waiting time",
    1318: "pilot failed to talk to the PanDA server",
    1319: "internal pilot problem; see the pilot log",
    1320: "could not create the log file",
    1324: "a service was not available",
    1326: "no matching replicas found",
    1327: "network unreachable during stage-in",
    1328: "payload segmentation fault (SIGSEGV)",
    1331: "input file missing in the storage element",
    1332: "black hole detected in the file system",
    1333: "no space left on device",
    1334: "setup failed with a fatal exception; see the payload log",
    1335: "user code not available on the PanDA server",
    1336: "job is already running elsewhere",
    1338: "authentication failure during stage-in",
    1341: "bad queue configuration",
    1343: "no output found in the job report",
    1344: "resource temporarily unavailable",
    1346: "transform not found",
    1349: "unrecognised transform arguments",
    1350: "empty output file",
    1351: "unrecognised fatal error in the transform's stderr",
    1355: "core dump detected",
    1359: "the PanDA queue is not active",
    1360: "container image not found",
    1361: "remote input file could not be opened",
    1362: "xrdcp could not open a file",
    1367: "a command timed out",
    1369: "Frontier (conditions database) error",
    1373: "certificate has expired",
    1376: "log file creation timed out",
}

#: jobDispatcherErrorCode: set by the server's watcher when a pilot goes silent.
DISPATCHER_CODES: dict[int, str] = {
    DispatcherError.LOST_HEARTBEAT: "lost heartbeat: the pilot stopped sending updates for longer than "
    "timeout_running; the pilot or its worker node died, or the batch system killed the slot",
    DispatcherError.RECOVERY: "job recovery failed: the pilot reported an error and then went silent",
    DispatcherError.SEND_ERROR: "the job was handed to a pilot that never confirmed it started "
    "(timeout_sent): the pilot died between getJob and its first update",
    DispatcherError.HOLDING: "stuck in holding longer than timeout_holding",
    DispatcherError.TRANSFERRING: "stuck in transferring longer than timeout_transferring",
    DispatcherError.TIMEOUT: "timed out in the server",
}

#: taskBufferErrorCode: why the server itself ended the job.
TASKBUFFER_CODES: dict[int, str] = {
    TaskBufferError.KILL: "killed: a user, an operator or the server asked for it",
    TaskBufferError.TRANSFER: "output transfer failed",
    TaskBufferError.EXPIRE: "expired: superseded or waited too long",
    TaskBufferError.ABORTED: "aborted",
    TaskBufferError.REASSIGNED: "reassigned: another job (a new PandaID) runs this work",
    TaskBufferError.RETRIED: "retried: a new attempt (a new PandaID) replaces this one",
    TaskBufferError.PILOT_RETRIED: "retried by the pilot",
    TaskBufferError.FAST_REBROKERAGE: "killed for fast rebrokerage to another queue",
    TaskBufferError.WORKER_DONE: "the worker ended without the pilot reporting the job",
}

#: ddmErrorCode: data management problems.
DDM_CODES: dict[int, str] = {
    DdmError.SETUPPER: "setting up the job's datasets failed",
    DdmError.ADDER: "the output file report was refused, so the outputs could not be registered",
}

#: brokerageErrorCode.
BROKERAGE_CODES: dict[int, str] = {
    NO_QUEUE: "no queue fits the job (offline, wrong type, too few cores, too little memory or wall time)",
}

#: Exit codes of the payload (exeErrorCode / transExitCode) that have a common meaning.
EXIT_CODES: dict[int, str] = {
    1: "the payload reported a generic failure",
    2: "the payload was misused (bad arguments)",
    126: "the payload command is not executable",
    127: "the payload command was not found",
    134: "the payload aborted (SIGABRT)",
    137: "the payload was killed (SIGKILL), very often for using too much memory",
    139: "the payload crashed (SIGSEGV)",
    143: "the payload was terminated (SIGTERM)",
}


@dataclass(frozen=True)
class Source:
    """One component that can end a job: its code and diagnostic columns and its table."""

    name: str
    code_field: str
    diag_field: str
    table: dict[int, str]


#: In the order a shifter reads them: the most specific cause first.
SOURCES: tuple[Source, ...] = (
    Source("taskbuffer", "taskBufferErrorCode", "taskBufferErrorDiag", TASKBUFFER_CODES),
    Source("dispatcher", "jobDispatcherErrorCode", "jobDispatcherErrorDiag", DISPATCHER_CODES),
    Source("pilot", "pilotErrorCode", "pilotErrorDiag", PILOT_CODES),
    Source("exe", "exeErrorCode", "exeErrorDiag", EXIT_CODES),
    Source("supervisor", "supErrorCode", "supErrorDiag", {}),
    Source("ddm", "ddmErrorCode", "ddmErrorDiag", DDM_CODES),
    Source("brokerage", "brokerageErrorCode", "brokerageErrorDiag", BROKERAGE_CODES),
)

#: Every column :func:`explain` reads, for queries that fetch only what they need.
ERROR_COLUMNS: tuple[str, ...] = tuple(name for s in SOURCES for name in (s.code_field, s.diag_field)) + (
    "transExitCode",
)


def _as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def meaning(source: str, code: int) -> str:
    """The explanation of ``code`` from ``source`` ("pilot", "dispatcher", ...), or ''."""
    for s in SOURCES:
        if s.name == source:
            text = s.table.get(code, "")
            if not text and source == "exe" and code > 128:
                text = f"the payload was killed by signal {code - 128}"
            return text
    return ""


def explain(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every error set on ``job``: source, code, diagnostic and meaning, most specific first."""
    out: list[dict[str, Any]] = []
    for s in SOURCES:
        code = _as_int(job.get(s.code_field))
        diag = (job.get(s.diag_field) or "").strip()
        if s.name == "brokerage" and job.get("computingSite") and job.get("jobStatus") != "defined":
            # An old brokerage note on a job that found a queue later is history, not a cause.
            if not code:
                continue
        if not code and not diag:
            continue
        out.append(
            {
                "source": s.name,
                "field": s.code_field,
                "code": code,
                "diag": diag,
                "meaning": meaning(s.name, code) if code else "",
            }
        )
    trans = str(job.get("transExitCode") or "").strip()
    if trans and trans not in ("0", "NULL") and not any(e["source"] == "exe" for e in out):
        code = _as_int(trans) if trans.lstrip("-").isdigit() else 0
        out.append(
            {
                "source": "transform",
                "field": "transExitCode",
                "code": code,
                "diag": "" if code else trans,
                "meaning": meaning("exe", code) if code else "",
            }
        )
    return out


def summary(job: dict[str, Any]) -> str:
    """One line saying why the job ended badly (or '' when no error is recorded).

    A pilot 1144 is only the pilot obeying a kill, so the task buffer's reason (who killed it)
    comes first; otherwise the first component in :data:`SOURCES` order that set a code wins.
    """
    errors = explain(job)
    if not errors:
        return ""
    first = errors[0]
    text = f"{first['source']} {first['code']}" if first["code"] else first["source"]
    detail = first["meaning"] or first["diag"]
    if first["meaning"] and first["diag"]:
        detail = f"{first['meaning']} ({first['diag']})"
    return f"{text}: {detail}" if detail else text
