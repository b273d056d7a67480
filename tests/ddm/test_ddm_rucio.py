"""The DDM interface against a real Rucio server (tests/rucio_server.py): real files on POSIX RSEs.

A dataset is uploaded with Rucio's own upload client, as a user would; everything after goes
through pandawms's DDM interface: listing files with sizes, checksums, GUIDs and events, their
replicas per RSE, making an output dataset and container, registering a file already written
on an RSE, rules (no transfer daemon runs, so a rule needing a copy stays REPLICATING), closing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pandawms.config import load_settings
from pandawms.core.runtime import Runtime
from pandawms.core.tasks.inputs import resolve_inputs
from pandawms.core.tasks.params import plan_task
from pandawms.ddm import DDMError, DIDNotFound, NewFile, RuleState, make_ddm
from pandawms.ddm.rucio import RucioConfig, RucioDDM
from tests.rucio_server import RucioServer, rucio_server, upload_dataset  # noqa: F401 - the session fixture

pytestmark = pytest.mark.slow

try:
    import rucio.client  # noqa: F401

    CLIENT_REASON = ""
except ImportError:
    CLIENT_REASON = "rucio-clients is not installed (pip install -e '.[test]')"

SCOPE = "tests"
EVENTS = {0: 100, 1: 250, 2: 0}


@pytest.fixture(scope="module")
def server(rucio_server: RucioServer) -> RucioServer:  # noqa: F811 - the imported fixture
    if CLIENT_REASON:
        pytest.skip(CLIENT_REASON)
    return rucio_server


@pytest.fixture(scope="module")
def ddm(server: RucioServer) -> RucioDDM:
    return RucioDDM(
        RucioConfig(
            host=server.url,
            account=server.account,
            username=server.username,
            password=server.password,
            timeout=60,
        )
    )


@dataclass
class Uploaded:
    dataset: str
    files: dict[str, tuple[int, str, str]]  # name -> (size, adler32, md5)


def _checksums(data: bytes) -> tuple[str, str]:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}", hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def uploaded(server: RucioServer, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """Three files uploaded by Rucio's upload client into a new dataset at PANDAWMS_DISK_A."""
    src = tmp_path_factory.mktemp("upload")
    tag = secrets.token_hex(4)
    files: dict[str, tuple[int, str, str]] = {}
    events: dict[str, int] = {}
    for index in range(3):
        name = f"data.{tag}._{index:06d}.root"
        data = os.urandom(1000 + 517 * index)
        (src / name).write_bytes(data)
        files[name] = (len(data), *_checksums(data))
        events[name] = EVENTS[index]
    dataset = f"data.{tag}.input"
    contents = {name: (src / name).read_bytes() for name in files}
    upload_dataset(server, src, "PANDAWMS_DISK_A", SCOPE, dataset, contents, events)
    return Uploaded(f"{SCOPE}:{dataset}", files)


def _path_of(pfn: str) -> Path:
    return Path(urlparse(pfn).path)


def test_files_of_an_uploaded_dataset(ddm: RucioDDM, uploaded: Uploaded) -> None:
    files = ddm.list_files(uploaded.dataset)
    assert [f.name for f in files] == sorted(uploaded.files)
    for index, f in enumerate(files):
        size, adler32, _md5 = uploaded.files[f.name]
        assert (f.scope, f.size, f.adler32) == (SCOPE, size, adler32)
        assert f.checksum == "ad:" + adler32
        assert f.guid and uuid.UUID(f.guid) and f.guid == f.guid.upper() and len(f.guid) == 36
        assert f.events == EVENTS[index]
    info = ddm.dataset_info(uploaded.dataset)
    assert (info.type, info.is_open, info.length) == ("DATASET", True, 3)
    assert info.bytes == sum(size for size, _, _ in uploaded.files.values())


def test_replicas_point_at_the_real_files(ddm: RucioDDM, uploaded: Uploaded, server: RucioServer) -> None:
    replicas = ddm.list_replicas([uploaded.dataset])
    assert [r.file.name for r in replicas] == sorted(uploaded.files)
    for replica in replicas:
        size, adler32, md5 = uploaded.files[replica.file.name]
        assert replica.rses == ["PANDAWMS_DISK_A"]
        assert (replica.file.size, replica.file.adler32, replica.file.md5) == (size, adler32, md5)
        (pfn,) = replica.pfns["PANDAWMS_DISK_A"]
        assert pfn.startswith("file://")
        path = _path_of(pfn)
        assert path.is_relative_to(server.rse_dirs["PANDAWMS_DISK_A"])
        data = path.read_bytes()
        assert _checksums(data) == (adler32, md5)
    # One file by name, and a scheme the RSE does not speak: the RSE holds it, with no PFN.
    one = sorted(uploaded.files)[0]
    (only,) = ddm.list_replicas([f"{SCOPE}:{one}"], schemes=["root"])
    assert only.pfns == {"PANDAWMS_DISK_A": []} or only.pfns == {}


def _deterministic_path(prefix: Path, scope: str, name: str) -> Path:
    """Where a deterministic RSE with the ``hash`` algorithm keeps a file (Rucio's layout)."""
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    folder = scope.replace(".", "/") if scope.startswith(("user.", "group.")) else scope
    return prefix / folder / digest[:2] / digest[2:4] / name


def test_output_dataset_registration_rules_and_close(ddm: RucioDDM, server: RucioServer) -> None:
    tag = secrets.token_hex(4)
    container = f"{SCOPE}:out.{tag}.log/"
    dataset = f"{SCOPE}:out.{tag}.log_sub01"
    ddm.create_container(container)
    ddm.create_dataset(dataset)
    ddm.create_dataset(dataset)  # again: a retried call is no error
    ddm.attach(container, [dataset])
    ddm.attach(container, [dataset])
    assert ddm.dataset_info(container).type == "CONTAINER"

    # The pilot wrote the file to DISK_B where Rucio expects it; the server registers it.
    name = f"log.{tag}._000001.tgz"
    data = os.urandom(4096)
    path = _deterministic_path(server.rse_dirs["PANDAWMS_DISK_B"], SCOPE, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    adler32, md5 = _checksums(data)
    guid = str(uuid.uuid4()).upper()
    new = NewFile(name=name, size=len(data), adler32=adler32, md5=md5, guid=guid, events=42)
    ddm.add_files(dataset, "PANDAWMS_DISK_B", [new])
    ddm.add_files(dataset, "PANDAWMS_DISK_B", [new])  # a retry after a timeout
    (listed,) = ddm.list_files(container)
    assert (listed.name, listed.size, listed.adler32, listed.guid, listed.events) == (
        name,
        len(data),
        adler32,
        guid,
        42,
    )
    (replica,) = ddm.list_replicas([dataset])
    assert replica.rses == ["PANDAWMS_DISK_B"]
    assert _path_of(replica.pfns["PANDAWMS_DISK_B"][0]) == path

    # A rule where the file already is: satisfied at once. One to the tape: it needs a
    # transfer, and no conveyor runs here, so it stays REPLICATING with one lock waiting.
    here = ddm.add_rule(dataset, "PANDAWMS_DISK_B")
    assert ddm.get_rule(here).state is RuleState.OK
    to_tape = ddm.add_rule(dataset, "PANDAWMS_TAPE", lifetime=3600)
    assert ddm.add_rule(dataset, "PANDAWMS_TAPE", lifetime=3600) == to_tape  # retried: same rule
    rule = ddm.get_rule(to_tape)
    assert (rule.state, rule.locks_replicating, rule.locks_ok) == (RuleState.REPLICATING, 1, 0)
    assert (rule.scope, rule.name, rule.rse_expression) == (SCOPE, dataset.split(":")[1], "PANDAWMS_TAPE")
    assert {r.id for r in ddm.list_rules(dataset)} == {here, to_tape}

    ddm.close(dataset)
    ddm.close(dataset)
    assert ddm.dataset_info(dataset).is_open is False
    late = NewFile(name=f"log.{tag}._000002.tgz", size=1, adler32="00000001")
    with pytest.raises(DDMError):
        ddm.add_files(dataset, "PANDAWMS_DISK_B", [late])


def test_rse_types(ddm: RucioDDM) -> None:
    assert ddm.rse_info("PANDAWMS_TAPE").is_tape is True
    assert ddm.rse_info("PANDAWMS_DISK_A").is_tape is False
    with pytest.raises(DDMError, match="unknown RSE"):
        ddm.rse_info("NO_SUCH_RSE")


def test_unknown_dataset_and_bad_registration(ddm: RucioDDM) -> None:
    with pytest.raises(DIDNotFound):
        ddm.list_files(f"{SCOPE}:no.such.dataset.{secrets.token_hex(4)}")
    with pytest.raises(DDMError, match="checksum"):
        ddm.add_files(f"{SCOPE}:x", "PANDAWMS_DISK_A", [NewFile(name="f", size=1)])


def test_calls_are_refused_on_the_event_loop_and_work_in_threads(ddm: RucioDDM, uploaded: Uploaded) -> None:
    async def on_loop() -> None:
        with pytest.raises(DDMError, match="event loop"):
            ddm.list_files(uploaded.dataset)
        files = await asyncio.to_thread(ddm.list_files, uploaded.dataset)
        assert len(files) == 3

    asyncio.run(on_loop())


def test_settings_with_a_password_file(server: RucioServer, uploaded: Uploaded, tmp_path: Path) -> None:
    secret = tmp_path / "rucio.pw"
    secret.write_text(server.password + "\n")
    env = {
        "PANDA_DDM_RUCIO_HOST": server.url,
        "PANDA_DDM_RUCIO_ACCOUNT": server.account,
        "PANDA_DDM_RUCIO_USERNAME": server.username,
        "PANDA_DDM_RUCIO_PASSWORD_FILE": str(secret),
        "PANDA_DDM_RUCIO_TIMEOUT": "30",
    }
    settings = load_settings(None, {"data_dir": str(tmp_path)}, environ=env)
    assert server.password not in repr(settings) and settings.shown()["ddm_rucio_password"] == "***"
    ddm = make_ddm(settings)
    assert server.password not in repr(ddm) and server.password not in repr(ddm.config)  # type: ignore[attr-defined]
    assert len(ddm.list_files(uploaded.dataset)) == 3


def test_a_wrong_password_is_a_clear_error_without_the_password(server: RucioServer) -> None:
    wrong = "not-the-" + secrets.token_hex(6)
    ddm = RucioDDM(
        RucioConfig(host=server.url, account=server.account, username=server.username, password=wrong)
    )
    with pytest.raises(DDMError) as info:
        ddm.list_files(f"{SCOPE}:anything")
    assert "login" in str(info.value) and wrong not in str(info.value)


def test_input_locality_is_disk_rses_holding_every_file(
    ddm: RucioDDM, uploaded: Uploaded, server: RucioServer, sqlite_rt: Runtime, tmp_path: Path
) -> None:
    """What brokerage reads for a task over datasets: disk RSEs with all its files; tape is not one."""
    on_tape = f"data.{secrets.token_hex(4)}.tape"
    upload_dataset(
        server, tmp_path / "tape", "PANDAWMS_TAPE", SCOPE, on_tape, {f"{on_tape}._000001": b"x" * 10}, {}
    )
    item = {"type": "template", "param_type": "input", "value": '-i "${IN/T}"'}
    params = {
        "taskName": "user.jdoe.loc/",
        "jobParameters": [
            {**item, "dataset": f"{uploaded.dataset},{SCOPE}:{on_tape}", "exclude": r"_000002"}
        ],
    }
    (disk, tape) = resolve_inputs(sqlite_rt, plan_task(params, "http://x"), ddm)
    assert [f.name for f in disk.files] == sorted(uploaded.files)[:2]
    assert disk.rses == ("PANDAWMS_DISK_A",)
    assert len(tape.files) == 1 and tape.rses == ()
