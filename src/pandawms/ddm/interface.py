"""What the server asks of a data management system (DDM), independent of which one.

Every deployment of PanDA keeps its data in Rucio, but the task and brokerage code should not
know that: it speaks of datasets, files, replicas and rules through :class:`DDM`, and the
Rucio implementation (:mod:`pandawms.ddm.rucio`) is one way to answer. Keeping the interface
small and typed also lets tests read the answers without knowing Rucio's dictionaries.

Every method is a blocking network call. They must run in a thread (the daemon's tasks, or
``asyncio.to_thread`` from a request handler), never on the event loop: :func:`off_event_loop`
refuses the call when it is made from a running loop, so a mistake shows in the first test
instead of as a stalled server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pandawms.model.errors import PandaError


class DDMError(PandaError):
    """A data management call that failed; the message says which call and why."""


class DDMNotConfigured(DDMError):
    """The server has no data management system configured, yet a task needs one."""


class DDMRefused(DDMError):
    """The data management system refused the call for a reason a retry will not change.

    (An unknown scope, RSE or DID, no permission, an invalid name or checksum.) Any other
    :class:`DDMError` may pass (an outage, a timeout, a server error): callers retry those.
    """


class DIDNotFound(DDMRefused):
    """A dataset, container or file that the data management system does not know."""


class RuleNotFound(DDMError):
    """A replication rule the data management system does not know (deleted, or expired)."""


#: Longest scope and name Rucio accepts (its DID columns).
MAX_SCOPE = 25
MAX_NAME = 250
_DID_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, order=True)
class DID:
    """A data identifier: ``scope:name`` of a file, dataset or container."""

    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"


def parse_did(text: str) -> DID:
    """``scope:name``, or a bare name whose scope follows the ATLAS naming convention.

    PanDA users write dataset names without a scope (``user.jdoe.mydata``, ``mc23_13p6TeV.5...``):
    the scope is then the first dot-separated token, or the first two for ``user.*`` and
    ``group.*`` names, as the real server and clients agree. A trailing ``/`` (a container,
    in DQ2's old convention) is dropped.
    """
    raw = text.strip()
    if raw.endswith("/"):
        raw = raw[:-1]
    if ":" in raw:
        scope, _, name = raw.partition(":")
    else:
        parts = raw.split(".")
        if parts[0] in ("user", "group") and len(parts) > 2:
            scope = ".".join(parts[:2])
        else:
            scope = parts[0]
        name = raw
    if not scope or not name or len(scope) > MAX_SCOPE or len(name) > MAX_NAME:
        raise DDMError(f"not a dataset name: {text[:300]!r}")
    if not _DID_PART.match(scope) or not _DID_PART.match(name):
        raise DDMError(f"not a dataset name: {text[:300]!r}")
    return DID(scope, name)


def as_did(value: DID | str) -> DID:
    """Accept a DID or its text form."""
    return value if isinstance(value, DID) else parse_did(value)


@dataclass(frozen=True)
class FileInfo:
    """A file as a job needs it: identity, size and checksums, GUID, number of events."""

    scope: str
    name: str
    size: int | None
    adler32: str | None = None
    md5: str | None = None
    guid: str | None = None
    events: int | None = None

    @property
    def did(self) -> DID:
        return DID(self.scope, self.name)

    @property
    def checksum(self) -> str | None:
        """PanDA's ``checksum`` field: ``ad:<adler32>`` when known, else ``md5:<md5>``."""
        if self.adler32:
            return "ad:" + self.adler32
        if self.md5:
            return "md5:" + self.md5
        return None


@dataclass(frozen=True)
class FileReplicas:
    """Where a file is: for every RSE holding an available copy, its PFNs, best first."""

    file: FileInfo
    pfns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rses(self) -> list[str]:
        return sorted(self.pfns)


@dataclass(frozen=True)
class NewFile:
    """A file already written to an RSE, to be registered there and attached to a dataset."""

    name: str
    size: int
    adler32: str | None = None
    md5: str | None = None
    guid: str | None = None
    events: int | None = None
    scope: str | None = None
    pfn: str | None = None


class RuleState(StrEnum):
    """Rucio's replication rule states (``OK`` once every file is where the rule wants it)."""

    OK = "OK"
    REPLICATING = "REPLICATING"
    STUCK = "STUCK"
    SUSPENDED = "SUSPENDED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    INJECT = "INJECT"


@dataclass(frozen=True)
class Rule:
    """A replication rule and how far it got."""

    id: str
    scope: str
    name: str
    rse_expression: str
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    error: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a dataset or container as a whole."""

    scope: str
    name: str
    type: str
    is_open: bool
    length: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class RSEInfo:
    """An RSE as brokerage sees it: disk or tape, and its attributes."""

    name: str
    is_tape: bool
    attributes: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class DDM(Protocol):
    """The calls the server makes to its data management system. All block: run them in threads."""

    def list_files(self, dataset: DID | str) -> list[FileInfo]:
        """Every file of a dataset, or of every dataset in a container, in name order."""
        ...

    def list_replicas(
        self, dids: Sequence[DID | str], schemes: Sequence[str] | None = None
    ) -> list[FileReplicas]:
        """The available replicas of files (or of the files of datasets/containers), per RSE."""
        ...

    def dataset_info(self, did: DID | str) -> DatasetInfo:
        """Type, open or closed, number of files and bytes of a dataset or container."""
        ...

    def create_dataset(self, did: DID | str, lifetime: int | None = None) -> None:
        """Make an open, empty dataset; one that already exists is left as it is."""
        ...

    def create_container(self, did: DID | str) -> None:
        """Make an empty container; one that already exists is left as it is."""
        ...

    def attach(self, parent: DID | str, children: Iterable[DID | str]) -> None:
        """Put datasets into a container (or containers into a container)."""
        ...

    def add_files(self, dataset: DID | str, rse: str, files: Sequence[NewFile]) -> None:
        """Register files already written on ``rse`` and attach them to ``dataset``."""
        ...

    def add_rule(
        self,
        did: DID | str,
        rse_expression: str,
        copies: int = 1,
        lifetime: int | None = None,
        activity: str | None = None,
        asynchronous: bool = False,
        source_replica_expression: str | None = None,
    ) -> str:
        """Ask for copies of ``did`` at the RSEs the expression names; the rule's id.

        ``source_replica_expression`` limits where the copies come from (the tape a staging
        rule reads).
        """
        ...

    def update_rule(self, rule_id: str, options: dict[str, object]) -> None:
        """Change a rule: ``lifetime`` (seconds; a short one lets it expire), ``source_replica_expression``..."""
        ...

    def get_rule(self, rule_id: str) -> Rule:
        """A rule's state and the count of its locks in each state."""
        ...

    def list_rules(self, did: DID | str) -> list[Rule]:
        """The rules on a DID."""
        ...

    def close(self, did: DID | str) -> None:
        """Close a dataset: no file may be added any more."""
        ...

    def reopen(self, did: DID | str) -> None:
        """Open a closed dataset again (a task retried after it ended adds files to it)."""
        ...

    def rse_info(self, rse: str) -> RSEInfo:
        """Whether an RSE is tape, and its attributes."""
        ...


def off_event_loop(call: str) -> None:
    """Refuse a blocking DDM call made on a running event loop (it would stall every request)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise DDMError(f"{call} is a blocking network call and was made on the event loop; run it in a thread")
