"""The :class:`~pandawms.ddm.interface.DDM` interface on Rucio's Python client (``rucio-clients``).

The client is imported only when a Rucio DDM is made, so the server runs without the package
when no DDM is configured. One client per thread: a client holds a ``requests`` session and
rewrites its token header when the token expires, which threads must not share. Every call has
the configured timeout (per HTTP request), and Rucio's exceptions become :class:`DDMError`
whose message names the call; credentials never appear in messages, logs or ``repr``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pandawms.ddm.interface import (
    DID,
    DatasetInfo,
    DDMError,
    DDMNotConfigured,
    DDMRefused,
    DIDNotFound,
    FileInfo,
    FileReplicas,
    NewFile,
    RSEInfo,
    Rule,
    RuleNotFound,
    RuleState,
    as_did,
    off_event_loop,
)

log = logging.getLogger("pandawms.ddm")

T = TypeVar("T")

#: Files per call when registering or attaching: Rucio's REST API takes bulks, not unbounded ones.
BULK = 500
#: Settings a Rucio DDM needs, named as an operator sets them.
REQUIRED_SETTINGS = "PANDA_DDM_RUCIO_HOST and PANDA_DDM_RUCIO_ACCOUNT"


@dataclass(frozen=True)
class RucioConfig:
    """How to reach and authenticate to Rucio. ``password`` is kept out of ``repr``."""

    host: str
    account: str
    auth_host: str = ""
    vo: str = ""
    auth_type: str = "userpass"
    username: str = ""
    password: str = field(default="", repr=False)
    cert: str = ""
    key: str = ""
    token_path: str = ""
    ca: str = ""
    timeout: int = 60

    @classmethod
    def from_settings(cls, settings: Any) -> RucioConfig:
        """The Rucio configuration of the server's Settings; refuses when it is incomplete."""
        host = getattr(settings, "ddm_rucio_host", "")
        account = getattr(settings, "ddm_rucio_account", "")
        if not host or not account:
            raise DDMNotConfigured(
                "this server has no data management system configured: set "
                f"{REQUIRED_SETTINGS} (and the credentials: PANDA_DDM_RUCIO_AUTH_TYPE, "
                "PANDA_DDM_RUCIO_USERNAME with PANDA_DDM_RUCIO_PASSWORD_FILE, or "
                "PANDA_DDM_RUCIO_CERT/KEY, or PANDA_DDM_RUCIO_TOKEN_PATH)"
            )
        config = cls(
            host=host,
            account=account,
            auth_host=getattr(settings, "ddm_rucio_auth_host", "") or host,
            vo=getattr(settings, "ddm_rucio_vo", ""),
            auth_type=getattr(settings, "ddm_rucio_auth_type", "userpass") or "userpass",
            username=getattr(settings, "ddm_rucio_username", ""),
            password=getattr(settings, "ddm_rucio_password", ""),
            cert=getattr(settings, "ddm_rucio_cert", ""),
            key=getattr(settings, "ddm_rucio_key", ""),
            token_path=getattr(settings, "ddm_rucio_token_path", ""),
            ca=getattr(settings, "ddm_rucio_ca", ""),
            timeout=int(getattr(settings, "ddm_rucio_timeout", 60) or 60),
        )
        config.check()
        return config

    def check(self) -> None:
        """Refuse a configuration that cannot authenticate, naming the missing settings."""
        if not self.host.startswith(("http://", "https://")):
            raise DDMNotConfigured("PANDA_DDM_RUCIO_HOST must be an http:// or https:// URL")
        if self.auth_type == "userpass" and not (self.username and self.password):
            raise DDMNotConfigured(
                "Rucio userpass authentication needs PANDA_DDM_RUCIO_USERNAME and "
                "PANDA_DDM_RUCIO_PASSWORD (best as PANDA_DDM_RUCIO_PASSWORD_FILE)"
            )
        if self.auth_type == "x509" and not self.cert:
            raise DDMNotConfigured(
                "Rucio x509 authentication needs PANDA_DDM_RUCIO_CERT (and PANDA_DDM_RUCIO_KEY, "
                "or a proxy file as the certificate)"
            )
        if self.auth_type == "token" and not self.token_path:
            raise DDMNotConfigured("Rucio token authentication needs PANDA_DDM_RUCIO_TOKEN_PATH")
        if self.auth_type not in ("userpass", "x509", "token"):
            raise DDMNotConfigured("PANDA_DDM_RUCIO_AUTH_TYPE must be userpass, x509 or token")


def _dashed_guid(guid: str | None) -> str | None:
    """Rucio keeps GUIDs as 32 hex digits; PanDA's files carry them dashed, upper case."""
    if not guid:
        return None
    plain = guid.replace("-", "").upper()
    if len(plain) != 32:
        return guid
    return f"{plain[:8]}-{plain[8:12]}-{plain[12:16]}-{plain[16:20]}-{plain[20:]}"


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RucioDDM:
    """Datasets, replicas and rules in Rucio, for the task manager and brokerage."""

    def __init__(self, config: RucioConfig) -> None:
        config.check()
        try:
            import rucio.client  # noqa: F401
            from rucio.common import exception as rucio_exceptions
        except ImportError:
            raise DDMNotConfigured(
                "Rucio is configured (PANDA_DDM_RUCIO_HOST) but the rucio-clients package is not "
                "installed: pip install 'pandawms[rucio]'"
            ) from None
        self.config = config
        self._exc = rucio_exceptions
        # Refusals a retry will not change; anything else (outage, server error) may pass.
        self._refusals: tuple[type[BaseException], ...] = tuple(
            getattr(rucio_exceptions, name)
            for name in (
                "ScopeNotFound",
                "AccessDenied",
                "InvalidObject",
                "InvalidRSEExpression",
                "InputValidationError",
                "FileConsistencyMismatch",
                "UnsupportedOperation",
                "RuleNotFound",
            )
            if isinstance(getattr(rucio_exceptions, name, None), type)
        )
        self._local = threading.local()
        # Rucio's client caches login tokens in files under /tmp shared by every client of the
        # same account; a private directory keeps this DDM from using a token it did not get
        # with its own credentials (and others from reading its token).
        self._token_dir = tempfile.mkdtemp(prefix="pandawms-rucio-")
        weakref.finalize(self, shutil.rmtree, self._token_dir, True)

    def __repr__(self) -> str:
        return f"RucioDDM(host={self.config.host!r}, account={self.config.account!r})"

    # -- plumbing -----------------------------------------------------------------------------

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            cfg = self.config
            creds: dict[str, Any]
            auth_type = cfg.auth_type
            if auth_type == "userpass":
                creds = {"username": cfg.username, "password": cfg.password}
            elif auth_type == "x509":
                if cfg.key:
                    creds = {"client_cert": cfg.cert, "client_key": cfg.key}
                else:  # a proxy holds certificate and key in one file
                    auth_type, creds = "x509_proxy", {"client_proxy": cfg.cert}
            else:
                # Rucio's client finds bearer tokens through the WLCG discovery rules: the
                # file named by BEARER_TOKEN_FILE, read again whenever it logs in.
                os.environ["BEARER_TOKEN_FILE"] = cfg.token_path
                auth_type, creds = "oidc", {}
            kwargs: dict[str, Any] = {
                "rucio_host": cfg.host,
                "auth_host": cfg.auth_host or cfg.host,
                "account": cfg.account,
                "auth_type": auth_type,
                "creds": creds,
                "timeout": cfg.timeout,
                "user_agent": "pandawms",
            }
            if cfg.vo:
                kwargs["vo"] = cfg.vo
            if cfg.ca:
                kwargs["ca_cert"] = cfg.ca
            client_class = _client_class(self._token_dir, threading.get_ident())
            client = self._wrap("login", lambda: client_class(**kwargs))
            self._local.client = client
        return client

    def _wrap(self, what: str, call: Callable[[], T], ok: tuple[type[BaseException], ...] = ()) -> T | None:
        """Run one Rucio call; its errors become DDMError naming ``what`` (``ok`` ones: None)."""
        off_event_loop(f"Rucio {what}")
        exc = self._exc
        try:
            return call()
        except ok:
            return None
        except exc.DataIdentifierNotFound as error:
            raise DIDNotFound(f"Rucio {what}: not found: {_message(error)}") from None
        except exc.RSENotFound as error:
            raise DDMRefused(f"Rucio {what}: unknown RSE: {_message(error)}") from None
        except self._refusals as error:
            raise DDMRefused(f"Rucio {what} refused: {type(error).__name__}: {_message(error)}") from None
        except exc.RucioException as error:
            raise DDMError(f"Rucio {what} failed: {type(error).__name__}: {_message(error)}") from None
        except OSError as error:  # requests' ConnectionError/Timeout derive from OSError
            raise DDMError(f"Rucio {what} failed: cannot reach {self.config.host}: {error}"[:500]) from None

    def _do(self, what: str, call: Callable[[Any], T], ok: tuple[type[BaseException], ...] = ()) -> T | None:
        client = self._client()
        return self._wrap(what, lambda: call(client), ok)

    # -- reading --------------------------------------------------------------------------------

    def list_files(self, dataset: DID | str) -> list[FileInfo]:
        did = as_did(dataset)
        rows = self._do(f"list files of {did}", lambda c: list(c.list_files(did.scope, did.name, long=True)))
        files = [
            FileInfo(
                scope=row["scope"],
                name=row["name"],
                size=row.get("bytes"),
                adler32=row.get("adler32"),
                guid=_dashed_guid(row.get("guid")),
                events=row.get("events"),
            )
            for row in rows or []
        ]
        # list_files carries adler32 only; files registered with md5 alone get it from metadata.
        missing = [f for f in files if not f.adler32]
        if missing:
            md5s = self._md5s([f.did for f in missing])
            files = [
                f if f.adler32 else FileInfo(f.scope, f.name, f.size, None, md5s.get(f.did), f.guid, f.events)
                for f in files
            ]
        return sorted(files, key=lambda f: (f.name, f.scope))

    def _md5s(self, dids: Sequence[DID]) -> dict[DID, str | None]:
        found: dict[DID, str | None] = {}
        for chunk in _chunks(dids, BULK):
            query = [{"scope": d.scope, "name": d.name} for d in chunk]
            rows = self._do("file metadata", lambda c, q=query: list(c.get_metadata_bulk(q)))  # type: ignore[misc]
            for row in rows or []:
                found[DID(row["scope"], row["name"])] = row.get("md5")
        return found

    def list_replicas(
        self, dids: Sequence[DID | str], schemes: Sequence[str] | None = None
    ) -> list[FileReplicas]:
        parsed = [as_did(d) for d in dids]
        result: list[FileReplicas] = []
        for chunk in _chunks(parsed, BULK):
            query = [{"scope": d.scope, "name": d.name} for d in chunk]
            rows = self._do(
                "list replicas",
                lambda c, q=query: list(  # type: ignore[misc]
                    c.list_replicas(q, schemes=list(schemes) if schemes else None, all_states=False)
                ),
            )
            for row in rows or []:
                pfns: dict[str, list[tuple[int, str]]] = {}
                for pfn, info in (row.get("pfns") or {}).items():
                    pfns.setdefault(info.get("rse"), []).append((int(info.get("priority") or 0), pfn))
                # RSEs without a PFN in the wanted schemes still hold the file.
                for rse in row.get("rses") or {}:
                    pfns.setdefault(rse, [])
                info = FileInfo(
                    scope=row["scope"],
                    name=row["name"],
                    size=row.get("bytes"),
                    adler32=row.get("adler32"),
                    md5=row.get("md5"),
                )
                result.append(FileReplicas(info, {rse: [p for _, p in sorted(v)] for rse, v in pfns.items()}))
        return sorted(result, key=lambda r: (r.file.name, r.file.scope))

    def dataset_info(self, did: DID | str) -> DatasetInfo:
        parsed = as_did(did)
        # Counted now (dynamic_depth): the stored counts of an open dataset lag behind.
        meta = (
            self._do(
                f"metadata of {parsed}", lambda c: c.get_did(parsed.scope, parsed.name, dynamic_depth="FILE")
            )
            or {}
        )
        return DatasetInfo(
            scope=parsed.scope,
            name=parsed.name,
            type=str(meta.get("type") or meta.get("did_type") or "").upper(),
            is_open=bool(meta.get("open", meta.get("is_open"))),
            length=meta.get("length"),
            bytes=meta.get("bytes"),
        )

    def rse_info(self, rse: str) -> RSEInfo:
        info = self._do(f"RSE {rse}", lambda c: c.get_rse(rse)) or {}
        attributes = self._do(f"attributes of RSE {rse}", lambda c: c.list_rse_attributes(rse)) or {}
        rse_type = str(info.get("rse_type", "")).upper()
        tape = rse_type == "TAPE" or str(attributes.get("istape", "")).lower() in ("true", "1")
        return RSEInfo(name=rse, is_tape=tape, attributes=dict(attributes))

    # -- writing --------------------------------------------------------------------------------

    def create_dataset(self, did: DID | str, lifetime: int | None = None) -> None:
        parsed = as_did(did)
        self._do(
            f"create dataset {parsed}",
            lambda c: c.add_dataset(parsed.scope, parsed.name, lifetime=lifetime),
            ok=(self._exc.DataIdentifierAlreadyExists,),
        )

    def create_container(self, did: DID | str) -> None:
        parsed = as_did(did)
        self._do(
            f"create container {parsed}",
            lambda c: c.add_container(parsed.scope, parsed.name),
            ok=(self._exc.DataIdentifierAlreadyExists,),
        )

    def attach(self, parent: DID | str, children: Iterable[DID | str]) -> None:
        target = as_did(parent)
        kids = [as_did(c) for c in children]
        for kid in kids:
            # One at a time so that a child attached by an earlier, timed-out try is no error.
            self._do(
                f"attach {kid} to {target}",
                lambda c, k=kid: c.attach_dids(
                    target.scope, target.name, [{"scope": k.scope, "name": k.name}]
                ),  # type: ignore[misc]
                ok=(self._exc.DuplicateContent,),
            )

    def add_files(self, dataset: DID | str, rse: str, files: Sequence[NewFile]) -> None:
        target = as_did(dataset)
        entries = [self._file_entry(target, f) for f in files]
        for chunk in _chunks(entries, BULK):
            done = self._do(
                f"add {len(chunk)} files to {target} at {rse}",
                lambda c, ch=chunk: c.add_files_to_dataset(target.scope, target.name, list(ch), rse=rse),  # type: ignore[misc]
                ok=(self._exc.FileAlreadyExists, self._exc.Duplicate, self._exc.DuplicateContent),
            )
            if done is None:
                # Some were registered by an earlier try: register and attach one by one.
                for entry in chunk:
                    replica = {k: v for k, v in entry.items() if k != "meta"}
                    self._do(
                        f"register {entry['name']} at {rse}",
                        lambda c, r=replica: c.add_replicas(rse, [r]),  # type: ignore[misc]
                        ok=(self._exc.Duplicate, self._exc.FileAlreadyExists),
                    )
                    self._do(
                        f"attach {entry['name']} to {target}",
                        lambda c, e=entry: c.attach_dids(  # type: ignore[misc]
                            target.scope, target.name, [{"scope": e["scope"], "name": e["name"]}]
                        ),
                        # Rucio answers FileAlreadyExists for a file already in the dataset.
                        ok=(self._exc.DuplicateContent, self._exc.FileAlreadyExists),
                    )

    @staticmethod
    def _file_entry(dataset: DID, f: NewFile) -> dict[str, Any]:
        if not f.adler32 and not f.md5:
            raise DDMError(f"file {f.name}: a checksum (adler32 or md5) is needed to register it")
        entry: dict[str, Any] = {"scope": f.scope or dataset.scope, "name": f.name, "bytes": int(f.size)}
        if f.adler32:
            entry["adler32"] = f.adler32
        if f.md5:
            entry["md5"] = f.md5
        if f.pfn:
            entry["pfn"] = f.pfn
        meta: dict[str, Any] = {}
        if f.guid:
            meta["guid"] = f.guid.replace("-", "").lower()
        if f.events is not None:
            meta["events"] = int(f.events)
        if meta:
            entry["meta"] = meta
        return entry

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
        parsed = as_did(did)
        ids = self._do(
            f"add rule for {parsed} to {rse_expression}",
            lambda c: c.add_replication_rule(
                [{"scope": parsed.scope, "name": parsed.name}],
                copies,
                rse_expression,
                lifetime=lifetime,
                activity=activity,
                asynchronous=asynchronous,
                source_replica_expression=source_replica_expression,
            ),
            ok=(self._exc.DuplicateRule,),
        )
        if ids:
            return str(ids[0])
        # The same rule exists already (an earlier try that timed out): answer its id.
        for rule in self.list_rules(parsed):
            if rule.rse_expression == rse_expression:
                return rule.id
        raise DDMError(f"Rucio add rule for {parsed} to {rse_expression}: no rule id returned")

    def update_rule(self, rule_id: str, options: dict[str, object]) -> None:
        self._do(f"update rule {rule_id}", lambda c: c.update_replication_rule(rule_id, dict(options)))

    def get_rule(self, rule_id: str) -> Rule:
        row = self._do(
            f"rule {rule_id}", lambda c: c.get_replication_rule(rule_id), ok=(self._exc.RuleNotFound,)
        )
        if not row:
            raise RuleNotFound(f"Rucio rule {rule_id}: not found")
        return _rule(row)

    def list_rules(self, did: DID | str) -> list[Rule]:
        parsed = as_did(did)
        rows = self._do(f"rules of {parsed}", lambda c: list(c.list_did_rules(parsed.scope, parsed.name)))
        return [_rule(r) for r in rows or []]

    def close(self, did: DID | str) -> None:
        parsed = as_did(did)
        self._do(
            f"close {parsed}",
            lambda c: c.close(parsed.scope, parsed.name),
            ok=(self._exc.UnsupportedOperation,),  # already closed
        )

    def reopen(self, did: DID | str) -> None:
        parsed = as_did(did)
        self._do(
            f"reopen {parsed}",
            lambda c: c.set_status(parsed.scope, parsed.name, open=True),
            ok=(self._exc.UnsupportedOperation,),  # already open
        )


def _client_class(token_dir: str, thread: int) -> Any:
    """Rucio's Client with its token files in ``token_dir`` (one file per thread and account)."""
    from rucio.client import Client

    if not hasattr(Client, "_get_auth_tokens"):  # another client version: its own cache
        return Client

    def _get_auth_tokens(self: Any) -> tuple[None, str, str, str]:
        stem = f"{token_dir}/{self.account}.{thread}"
        return None, stem + ".expires", stem + ".token", token_dir

    return type("PandawmsRucioClient", (Client,), {"_get_auth_tokens": _get_auth_tokens})


def _rule(row: dict[str, Any]) -> Rule:
    try:
        state = RuleState(str(row.get("state", "")).upper())
    except ValueError:
        state = RuleState.STUCK
    return Rule(
        id=str(row["id"]),
        scope=str(row["scope"]),
        name=str(row["name"]),
        rse_expression=str(row.get("rse_expression", "")),
        state=state,
        locks_ok=int(row.get("locks_ok_cnt") or 0),
        locks_replicating=int(row.get("locks_replicating_cnt") or 0),
        locks_stuck=int(row.get("locks_stuck_cnt") or 0),
        error=row.get("error"),
    )


def _message(error: BaseException) -> str:
    text = str(getattr(error, "_message", "") or error)
    return " ".join(text.split())[:400]
