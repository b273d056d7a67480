"""JobSpec and FileSpec attributes: names, order, types and limits.

The real clients serialise a job as a positional list in exactly this attribute order
(panda-client's ``JobSpec._attributes``), so the order here is part of the wire protocol and
may only ever be appended to. Types and lengths follow the production PanDA schema so that a
value the real server would store is a value we store too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["int", "float", "str", "datetime", "text"]


@dataclass(frozen=True, slots=True)
class Attribute:
    """One job or file attribute: its wire name, value kind and maximum length for strings."""

    name: str
    kind: Kind
    length: int = 0


def _parse(table: str) -> tuple[Attribute, ...]:
    """Read the compact ``name:kind[:length]`` table below; kept as text so it reads like the schema."""
    attrs = []
    for token in table.split():
        parts = token.split(":")
        kind = parts[1]
        assert kind in ("int", "float", "str", "datetime", "text"), token
        attrs.append(Attribute(parts[0], kind, int(parts[2]) if len(parts) > 2 else 0))  # type: ignore[arg-type]
    return tuple(attrs)


JOB_ATTRIBUTES: tuple[Attribute, ...] = _parse(
    """
    PandaID:int jobDefinitionID:int schedulerID:str:128 pilotID:str:200 creationTime:datetime
    creationHost:str:128 modificationTime:datetime modificationHost:str:128 AtlasRelease:str:64
    transformation:str:250 homepackage:str:80 prodSeriesLabel:str:20 prodSourceLabel:str:20
    prodUserID:str:250 assignedPriority:int currentPriority:int attemptNr:int maxAttempt:int
    jobStatus:str:15 jobName:str:256 maxCpuCount:int maxCpuUnit:str:32 maxDiskCount:int
    maxDiskUnit:str:4 ipConnectivity:str:5 minRamCount:int minRamUnit:str:2 startTime:datetime
    endTime:datetime cpuConsumptionTime:int cpuConsumptionUnit:str:128 commandToPilot:str:250
    transExitCode:str:128 pilotErrorCode:int pilotErrorDiag:str:500 exeErrorCode:int
    exeErrorDiag:str:500 supErrorCode:int supErrorDiag:str:250 ddmErrorCode:int ddmErrorDiag:str:500
    brokerageErrorCode:int brokerageErrorDiag:str:250 jobDispatcherErrorCode:int
    jobDispatcherErrorDiag:str:250 taskBufferErrorCode:int taskBufferErrorDiag:str:300
    computingSite:str:128 computingElement:str:128 jobParameters:text metadata:text
    prodDBlock:str:255 dispatchDBlock:str:255 destinationDBlock:str:255 destinationSE:str:250
    nEvents:int grid:str:50 cloud:str:50 cpuConversion:float sourceSite:str:36
    destinationSite:str:36 transferType:str:10 taskID:int cmtConfig:str:250 stateChangeTime:datetime
    prodDBUpdateTime:datetime lockedby:str:128 relocationFlag:int jobExecutionID:int VO:str:32
    pilotTiming:str:100 workingGroup:str:20 processingType:str:64 prodUserName:str:60
    nInputFiles:int countryGroup:str:20 batchID:str:80 parentID:int specialHandling:str:80
    jobsetID:int coreCount:int nInputDataFiles:int inputFileType:str:32 inputFileProject:str:64
    inputFileBytes:int nOutputDataFiles:int outputFileBytes:int jobMetrics:str:500 workQueue_ID:int
    jediTaskID:int jobSubStatus:str:80 actualCoreCount:int reqID:int maxRSS:int maxVMEM:int
    maxSWAP:int maxPSS:int avgRSS:int avgVMEM:int avgSWAP:int avgPSS:int maxWalltime:int
    nucleus:str:52 eventService:int failedAttempt:int hs06sec:int gshare:str:32 hs06:int
    totRCHAR:int totWCHAR:int totRBYTES:int totWBYTES:int rateRCHAR:int rateWCHAR:int
    rateRBYTES:int rateWBYTES:int resource_type:str:56 diskIO:int memory_leak:int
    memory_leak_x2:float container_name:str:200 job_label:str:20 gco2_regional:float
    gco2_global:float cpu_architecture_level:str:20 outputFileType:str:32
    """
)

JOB_ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in JOB_ATTRIBUTES)
JOB_ATTRIBUTE_BY_NAME: dict[str, Attribute] = {a.name: a for a in JOB_ATTRIBUTES}

#: Attributes kept outside the jobs table (large text), as the real server does.
JOB_SIDE_ATTRIBUTES: frozenset[str] = frozenset({"jobParameters", "metadata"})

#: Columns of the jobs table, in wire order.
JOB_COLUMNS: tuple[Attribute, ...] = tuple(a for a in JOB_ATTRIBUTES if a.name not in JOB_SIDE_ATTRIBUTES)

#: Attributes that read 0, never NULL, when unset (the real JobSpec's zero attributes).
JOB_ZERO_ATTRIBUTES: frozenset[str] = frozenset(
    """assignedPriority currentPriority attemptNr maxAttempt maxCpuCount maxDiskCount minRamCount
    cpuConsumptionTime pilotErrorCode exeErrorCode supErrorCode ddmErrorCode brokerageErrorCode
    jobDispatcherErrorCode taskBufferErrorCode nEvents relocationFlag jobExecutionID
    nOutputDataFiles outputFileBytes""".split()
)

#: Values the pilot may send that are cut to the column length rather than refused.
TRUNCATED_ON_UPDATE: frozenset[str] = frozenset(
    """ddmErrorDiag taskBufferErrorDiag jobDispatcherErrorDiag brokerageErrorDiag pilotErrorDiag
    exeErrorDiag jobSubStatus supErrorDiag commandToPilot inputFileType outputFileType grid
    sourceSite destinationSite pilotID batchID modificationHost jobMetrics cpuConsumptionUnit
    cpu_architecture_level pilotTiming schedulerID""".split()
)

FILE_ATTRIBUTES: tuple[Attribute, ...] = _parse(
    """
    rowID:int PandaID:int GUID:str:64 lfn:str:4000 type:str:20 dataset:str:255 status:str:64
    prodDBlock:str:255 prodDBlockToken:str:250 dispatchDBlock:str:255 dispatchDBlockToken:str:250
    destinationDBlock:str:255 destinationDBlockToken:str:250 destinationSE:str:250 fsize:int
    md5sum:str:36 checksum:str:36 scope:str:30 jediTaskID:int datasetID:int fileID:int attemptNr:int
    """
)
FILE_ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in FILE_ATTRIBUTES)
FILE_ATTRIBUTE_BY_NAME: dict[str, Attribute] = {a.name: a for a in FILE_ATTRIBUTES}
FILE_ZERO_ATTRIBUTES: frozenset[str] = frozenset({"fsize"})

#: File types the server knows. ``pseudo_input`` is never sent to a pilot.
FILE_TYPES: frozenset[str] = frozenset({"input", "output", "log", "pseudo_input", "zipinput", "pp_input"})

#: prodSourceLabel values of user analysis jobs (answered with a jobsetID on submit).
USER_LABELS: frozenset[str] = frozenset({"user", "panda"})
#: Labels whose jobs get ``maxAttempt`` raised to ``attemptNr + 2`` at submission.
RETRY_RAISED_LABELS: frozenset[str] = frozenset({"user", "panda", "ptest"})
#: Labels only production callers may submit.
PRODUCTION_LABELS: frozenset[str] = frozenset({"managed"})

#: Which job labels a getJob with a given prodSourceLabel may take (None = the label itself).
DISPATCH_LABELS: dict[str, tuple[str, ...]] = {
    "user": ("user", "panda", "install"),
    "managed": ("managed", "test", "prod_test", "install"),
    "test": ("prod_test", "install", "test"),
    "unified": ("managed", "test", "prod_test", "install", "user", "panda"),
}
