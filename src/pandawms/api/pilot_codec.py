"""The pilot's view of a job: getJob's flat reply and updateJob's parameters.

Both the legacy ``/server/panda`` calls and v1 ``pilot/*`` (Harvester) use these, so a pilot
gets the same job description whichever way it asks.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from pandawms.core.jobs.cloning import mode_of as clone_mode
from pandawms.core.jobs.heartbeat import PilotUpdate
from pandawms.core.jobs.pilot_binding import Caller
from pandawms.model.errors import PandaError, TooLarge
from pandawms.model.event_states import TAKES_RANGES, EventServiceFlag
from pandawms.model.jobspec import JOB_ATTRIBUTE_BY_NAME
from pandawms.model.values import FLOAT_MAX, NULL, BadValue, coerce, parse_datetime

log = logging.getLogger("pandawms.api.pilot")

_MULTI_STEP = re.compile(r"<MULTI_STEP_EXEC>.*?</MULTI_STEP_EXEC>", re.S)


def _v(value: Any) -> Any:
    """PanDA's unset marker for the pilot: "NULL"."""
    return NULL if value is None else value


def _join(
    files: list[dict[str, Any]], key: str, transform: Callable[[Any], Any] | None = None, unset: str = ""
) -> str:
    values = []
    for f in files:
        value = f.get(key)
        if transform is not None:
            value = transform(value)
        values.append(unset if value is None else str(value))
    return ",".join(values)


def _tokens(files: list[dict[str, Any]], key: str) -> str:
    """Space tokens per file, "NULL" for a file without one, as the real dispatcher sends them."""
    return _join(files, key, unset=NULL)


def _input_checksum(f: dict[str, Any]) -> str:
    return f.get("checksum") or f.get("md5sum") or ""


def _first_token(value: Any) -> str:
    if value is None:
        return NULL
    return str(value).split(",")[0].replace("ddd:", "dst:")


def job_for_pilot(job: dict[str, Any], n_sent: int = 0) -> dict[str, Any]:
    """The flat getJob reply for one job (StatusCode 0 included)."""
    files = job.get("Files", [])
    seen: set[str] = set()
    inputs = []
    for f in files:
        if f.get("type") == "input" and f.get("lfn") not in seen:
            seen.add(f["lfn"])
            inputs.append(f)
    outputs = [f for f in files if f.get("type") in ("output", "log")]
    logs = [f for f in files if f.get("type") == "log"]
    only_outputs = [f for f in files if f.get("type") == "output"]
    handling = (job.get("specialHandling") or "").split(",")
    raw_params = job.get("jobParameters") or ""
    multi_step = _MULTI_STEP.search(raw_params) is not None
    params = _MULTI_STEP.sub("", raw_params)
    if "ej" in handling:
        params = base64.b64encode(params.encode()).decode()
    task_id = (
        job.get("jediTaskID") if job.get("lockedby") == "jedi" or job.get("jediTaskID") else job.get("taskID")
    )
    reply: dict[str, Any] = {
        "StatusCode": 0,
        "PandaID": job["PandaID"],
        "prodSourceLabel": _v(job.get("prodSourceLabel")),
        "swRelease": _v(job.get("AtlasRelease")),
        "homepackage": _v(job.get("homepackage")),
        "transformation": _v(job.get("transformation")),
        "jobName": _v(job.get("jobName")),
        "jobDefinitionID": _v(job.get("jobDefinitionID")),
        "cloud": _v(job.get("cloud")),
        "inFiles": _join(inputs, "lfn"),
        "dispatchDblock": _join(inputs, "dispatchDBlock"),
        "dispatchDBlockToken": _tokens(inputs, "dispatchDBlockToken"),
        "dispatchDBlockTokenForOut": _tokens(outputs, "dispatchDBlockToken"),
        "destinationDBlockToken": _join(outputs, "destinationDBlockToken", _first_token),
        "prodDBlocks": _join(inputs, "prodDBlock"),
        "prodDBlockToken": _tokens(inputs, "prodDBlockToken"),
        "prodDBlockTokenForOutput": _tokens(outputs, "prodDBlockToken"),
        "realDatasetsIn": _join(inputs, "dataset"),
        "GUID": _join(inputs, "GUID"),
        "fsize": ",".join(str(f.get("fsize") or 0) for f in inputs),
        "checksum": ",".join(_input_checksum(f) for f in inputs),
        "scopeIn": _join(inputs, "scope"),
        # The RSE each input is read from (the generator keeps it as the file's ddd:<RSE> token).
        "ddmEndPointIn": _join(inputs, "dispatchDBlockToken", _endpoint),
        "outFiles": _join(outputs, "lfn"),
        "destinationDblock": _join(outputs, "destinationDBlock"),
        "realDatasets": _join(outputs, "dataset"),
        "fileDestinationSE": _join(outputs, "destinationSE"),
        "destinationSE": _v(job.get("destinationSE")),
        "ddmEndPointOut": _join(outputs, "destinationDBlockToken", _endpoint),
        "scopeOut": _join(only_outputs, "scope"),
        "logFile": logs[0]["lfn"] if logs else "",
        "logGUID": (logs[0].get("GUID") or "") if logs else "",
        "scopeLog": (logs[0].get("scope") or "") if logs else "",
        "jobPars": params,
        "attemptNr": job.get("attemptNr") or 0,
        "maxCpuCount": job.get("maxCpuCount") or 0,
        "maxDiskCount": job.get("maxDiskCount") or 0,
        "minRamCount": job.get("minRamCount") or 0,
        "maxWalltime": _v(job.get("maxWalltime")),
        "coreCount": job.get("coreCount") or 1,
        # "NULL" when unset, as the real dispatcher sends it; "" only for a multi-step job without one.
        "cmtConfig": job.get("cmtConfig") or ("" if multi_step else NULL),
        "currentPriority": job.get("currentPriority") or 0,
        "taskID": _v(task_id),
        "jobsetID": _v(job.get("jobsetID")),
        "reqID": _v(job.get("reqID")),
        "processingType": _v(job.get("processingType")),
        "transferType": _v(job.get("transferType")),
        "sourceSite": _v(job.get("sourceSite")),
        "nucleus": _v(job.get("nucleus")),
        "prodUserID": _v(job.get("prodUserID")),
        "resource_type": _v(job.get("resource_type")),
        "ioIntensity": NULL,
        "ioIntensityUnit": NULL,
        "nSent": n_sent,
    }
    if job.get("container_name"):
        reply["container_name"] = job["container_name"]
    if "lc" in handling:
        reply["loopingCheck"] = False
    if "dm" in handling or "debug" in handling:
        reply["debug"] = "True"
    mode = clone_mode(job.get("specialHandling"))
    if mode:
        reply["cloneJob"] = mode
    for tag, key in (
        ("nc", "noExecStrCnv"),
        ("po", "putLogToOS"),
        ("up", "usePrefetcher"),
        ("om", "onSiteMerging"),
        ("if", "inFilePosEvtNum"),
    ):
        if tag in handling:
            reply[key] = "True"
    # Event service: a consumer (or jumbo job) takes event ranges; a merge job merges their outputs.
    flag = job.get("eventService")
    if flag in TAKES_RANGES:
        reply["eventService"] = "True"
    elif flag == EventServiceFlag.MERGE:
        reply["eventServiceMerge"] = "True"
    no_output = [f["lfn"] for f in outputs if "an" in (f.get("dispatchDBlockToken") or "").split(",")]
    if no_output:
        reply["allowNoOutput"] = ",".join(no_output)
    return reply


def _endpoint(token: Any) -> str:
    first = (token or "").split(",")[0]
    for prefix in ("dst:", "ddd:"):
        if first.startswith(prefix):
            return first[len(prefix) :]
    return ""


# updateJob parameter -> (column, conversion). Conversions raise ValueError on bad input.
_INT64 = 2**63


def _int(value: str) -> int:
    """A whole number that fits the 64-bit integer columns (pilots send ``12`` or ``12.0``).

    Out of range is a ValueError like any other bad number: the metric is dropped, where
    handing the database a 100-digit integer failed the whole update.
    """
    text = value.strip()
    try:
        result = int(text)
    except ValueError:
        result = int(_float(text))
    if not -_INT64 <= result < _INT64:
        raise ValueError(f"{text[:40]} is outside the 64-bit integer range")
    return result


def _abs_int(value: str) -> int:
    result = abs(_int(value))
    if result >= _INT64:
        raise ValueError("outside the 64-bit integer range")
    return result


def _kb(value: str) -> int:
    kib = int(_float(value) / 1024)
    return max(min(kib, 10**10 - 1), -(10**10 - 1))


def _capped(value: str) -> int:
    return min(_int(value), 10**10 - 1)


def _float(value: str) -> float:
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    if abs(result) > FLOAT_MAX:
        raise ValueError("beyond the range of the float columns")
    return result


def _text(column: str) -> Callable[[str], str]:
    attr = JOB_ATTRIBUTE_BY_NAME[column]

    def convert(value: str) -> str:
        return str(coerce(attr, _without_nul(value), truncate=True))

    return convert


def _time(value: str) -> Any:
    try:
        return parse_datetime(value)
    except BadValue as exc:
        raise ValueError(str(exc)) from None


UPDATE_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "cpuConsumptionTime": ("cpuConsumptionTime", _int),
    "cpuConsumptionUnit": ("cpuConsumptionUnit", _text("cpuConsumptionUnit")),
    "cpuConversionFactor": ("cpuConversion", _float),
    "cpu_architecture_level": ("cpu_architecture_level", _text("cpu_architecture_level")),
    "node": ("modificationHost", _text("modificationHost")),
    "transExitCode": ("transExitCode", _text("transExitCode")),
    "pilotErrorCode": ("pilotErrorCode", _abs_int),
    "exeErrorCode": ("exeErrorCode", _int),
    "pilotErrorDiag": ("pilotErrorDiag", _text("pilotErrorDiag")),
    "exeErrorDiag": ("exeErrorDiag", _text("exeErrorDiag")),
    "jobMetrics": ("jobMetrics", _text("jobMetrics")),
    "schedulerID": ("schedulerID", _text("schedulerID")),
    "pilotID": ("pilotID", _text("pilotID")),
    "batchID": ("batchID", _text("batchID")),
    "pilotTiming": ("pilotTiming", _text("pilotTiming")),
    "nEvents": ("nEvents", _int),
    "nInputFiles": ("nInputFiles", _int),
    "jobSubStatus": ("jobSubStatus", _text("jobSubStatus")),
    "coreCount": ("actualCoreCount", _int),
    "meanCoreCount": ("meanCoreCount", _float),
    "maxRSS": ("maxRSS", _int),
    "maxVMEM": ("maxVMEM", _int),
    "maxSWAP": ("maxSWAP", _int),
    "maxPSS": ("maxPSS", _int),
    "avgRSS": ("avgRSS", _int),
    "avgVMEM": ("avgVMEM", _int),
    "avgSWAP": ("avgSWAP", _int),
    "avgPSS": ("avgPSS", _int),
    "totRCHAR": ("totRCHAR", _kb),
    "totWCHAR": ("totWCHAR", _kb),
    "totRBYTES": ("totRBYTES", _kb),
    "totWBYTES": ("totWBYTES", _kb),
    "rateRCHAR": ("rateRCHAR", _capped),
    "rateWCHAR": ("rateWCHAR", _capped),
    "rateRBYTES": ("rateRBYTES", _capped),
    "rateWBYTES": ("rateWBYTES", _capped),
    "startTime": ("startTime", _time),
    "endTime": ("endTime", _time),
    "grid": ("grid", _text("grid")),
    "source_site": ("sourceSite", _text("sourceSite")),
    "destination_site": ("destinationSite", _text("destinationSite")),
}
#: Parameters the pilot sends that carry nothing to store.
IGNORED_UPDATE_FIELDS = frozenset(
    {
        "jobId",
        "state",
        "attemptNr",
        "xml",
        "metaData",
        "pilotLog",
        "token",
        "timestamp",
        "workdir",
        "remainingSpace",
        "siteName",
        "messageLevel",
        "computingElement",
        "timeout",
        "corruptedFiles",
        "harvester_id",
        "worker_id",
        "version",
    }
)
#: Largest report, job report or log accepted in one update (bytes of text).
MAX_SIDE_TEXT = 8 * 1024 * 1024


def _parse_int(name: str, value: Any, required: bool) -> int | None:
    if value is None or value == "" or value == NULL:
        if required:
            raise PandaError(f"{name} is required")
        return None
    try:
        result = int(str(value).strip())
    except ValueError:
        raise PandaError(f"{name} must be an integer, got {str(value)[:40]!r}") from None
    if not 0 <= result < 2**63:
        raise PandaError(f"{name} is out of range: {result}")
    return result


def _without_nul(text: str) -> str:
    """Pilot text with NUL characters made visible (U+FFFD).

    A payload's log tail can hold NULs; PostgreSQL cannot store them and failed the whole
    update (a 503, so the pilot retried the same bytes until it gave up and the job was lost).
    """
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _side_text(name: str, value: Any) -> str | None:
    if value is None or value == "" or value == NULL:
        return None
    text = _without_nul(value if isinstance(value, str) else str(value))
    if len(text) > MAX_SIDE_TEXT:
        raise TooLarge(f"{name} is larger than {MAX_SIDE_TEXT} bytes")
    return text


def parse_update(params: Mapping[str, Any], caller: Caller | None) -> PilotUpdate:
    """updateJob's parameters (legacy names, string values) -> a :class:`PilotUpdate`.

    ``caller`` is who sends it (:func:`pandawms.core.jobs.pilot_binding.caller_for`): the core
    accepts the update only if the job was dispatched to them.

    ``jobId``, ``state`` and ``attemptNr`` must be right or the update is refused; a metric
    that does not parse is dropped with a log line, as one bad number must not lose a heartbeat.
    """
    panda_id = _parse_int("jobId", params.get("jobId"), required=True)
    state = str(params.get("state") or "")
    attempt = _parse_int("attemptNr", params.get("attemptNr"), required=False)
    values: dict[str, Any] = {}
    for name, raw in params.items():
        target = UPDATE_FIELDS.get(name)
        if target is None or raw is None or raw == "" or raw == NULL:
            continue
        column, convert = target
        try:
            values[column] = convert(str(raw))
        except (ValueError, OverflowError) as exc:
            log.warning("job %s: dropped %s=%r from pilot update: %s", panda_id, name, str(raw)[:60], exc)
    metrics = values.get("jobMetrics") or ""
    for item in metrics.split():
        key, _, number = item.partition("=")
        try:
            if key == "leak":
                values["memory_leak"] = _int(number)
            elif key == "chi2":
                values["memory_leak_x2"] = _float(number)
        except ValueError:
            continue
    assert panda_id is not None
    return PilotUpdate(
        panda_id=panda_id,
        state=state,
        attempt_nr=attempt,
        values=values,
        report=_side_text("xml", params.get("xml")),
        metadata=_side_text("metaData", params.get("metaData")),
        pilot_log=_side_text("pilotLog", params.get("pilotLog")),
        caller=caller,
        stdout=_stdout_tail(params.get("stdout")),
    )


#: Most of a debug-mode stdout tail kept (its end: the newest output).
MAX_DEBUG_STDOUT = 1024 * 1024


def _stdout_tail(value: Any) -> str | None:
    """The debug-mode output a pilot sent, cut to its last MAX_DEBUG_STDOUT characters.

    Cut rather than refused: a long tail must not cost the heartbeat it rides on.
    """
    if value is None or value == "" or value == NULL:
        return None
    text = _without_nul(value if isinstance(value, str) else str(value))
    return text[-MAX_DEBUG_STDOUT:]


#: v1 snake_case update parameters -> legacy names.
V1_UPDATE_NAMES: dict[str, str] = {
    "job_id": "jobId",
    "job_status": "state",
    "job_output_report": "xml",
    "node": "node",
    "cpu_consumption_time": "cpuConsumptionTime",
    "cpu_consumption_unit": "cpuConsumptionUnit",
    "scheduler_id": "schedulerID",
    "pilot_id": "pilotID",
    "site_name": "siteName",
    "pilot_log": "pilotLog",
    "meta_data": "metaData",
    "cpu_conversion_factor": "cpuConversionFactor",
    "trans_exit_code": "transExitCode",
    "pilot_error_code": "pilotErrorCode",
    "pilot_error_diag": "pilotErrorDiag",
    "exe_error_code": "exeErrorCode",
    "exe_error_diag": "exeErrorDiag",
    "pilot_timing": "pilotTiming",
    "start_time": "startTime",
    "end_time": "endTime",
    "n_events": "nEvents",
    "n_input_files": "nInputFiles",
    "batch_id": "batchID",
    "attempt_nr": "attemptNr",
    "job_metrics": "jobMetrics",
    "stdout": "stdout",
    "job_sub_status": "jobSubStatus",
    "core_count": "coreCount",
    "max_rss": "maxRSS",
    "max_vmem": "maxVMEM",
    "max_swap": "maxSWAP",
    "max_pss": "maxPSS",
    "avg_rss": "avgRSS",
    "avg_vmem": "avgVMEM",
    "avg_swap": "avgSWAP",
    "avg_pss": "avgPSS",
    "tot_rchar": "totRCHAR",
    "tot_wchar": "totWCHAR",
    "tot_rbytes": "totRBYTES",
    "tot_wbytes": "totWBYTES",
    "rate_rchar": "rateRCHAR",
    "rate_wchar": "rateWCHAR",
    "rate_rbytes": "rateRBYTES",
    "rate_wbytes": "rateWBYTES",
    "corrupted_files": "corruptedFiles",
    "mean_core_count": "meanCoreCount",
    "cpu_architecture_level": "cpu_architecture_level",
    "grid": "grid",
    "source_site": "source_site",
    "destination_site": "destination_site",
    "timeout": "timeout",
    # Harvester forwards the pilot's token in bulk updates; it carries nothing to store.
    "token": "token",
}


def v1_to_legacy(params: Mapping[str, Any]) -> dict[str, Any]:
    """Rename v1 update parameters to the legacy names; unknown names are refused."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        legacy = V1_UPDATE_NAMES.get(name)
        if legacy is None:
            raise PandaError(f"Argument error: unexpected argument {name!r}")
        out[legacy] = value if isinstance(value, str) or value is None else _stringify(value)
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, dict | list):
        import orjson

        return orjson.dumps(value).decode()
    return str(value)
