"""Running the real PanDA pilot (panda-pilot 3.7.0.36) against a pandawms server, safely.

The pilot is the acceptance test of the legacy API: whatever it sends is the wire format. This
module sets it up so that it needs nothing but the pandawms server under test:

* the queue definition comes from pandawms (``/cache/schedconfig/<queue>.all.json`` and
  ``schedconfig.all.json``), so a test loads it through the server's own queue loader
  (:func:`load_queues`);
* every other URL in the pilot's configuration points at a closed loopback port, so nothing
  leaves the machine (the storage-endpoint list is a local file, as pandawms serves none);
* the payload script is taken from a local directory (``HARVESTER_WORKDIR``), never downloaded;
* the pilot runs with ``PILOT_NOKILL=1`` inside ``unshare --pid --fork --mount-proc``: at the
  end of every job it kills *every* process of its user whose parent is PID 1, which outside
  its own PID namespace means unrelated processes of the machine. The whole namespace is
  killed when the time limit passes.

The wheel installs only the ``pilot`` package; the launcher ``pilot.py`` is in the sdist. It is
fetched once with pip into a cache directory (``PANDAWMS_PILOT_CACHE``, default
``~/.cache/pandawms``) unless ``PANDAWMS_PILOT_SCRIPT`` names a copy. Where the pilot cannot
run (no pilot, Python 3.13+, no ``unshare`` permission, sdist not reachable) the tests skip with
the reason, or fail with it when ``PANDAWMS_REQUIRE_PILOT=1`` (for CI).

The newest pilot (3.11) is not on PyPI: its source tarball ``pilot3-<version>.tar.gz`` is read
from ``PANDAWMS_PILOT3_TARBALL`` or from ``shared/clients/`` beside the project root, unpacked
once into the cache directory, and run from there (``flavour="3.11"``); its own ``pilot``
package then comes first on its path, whatever panda-pilot is installed.

Typical use (see ``tests/e2e/test_real_pilot.py``)::

    load_queues(server.db_url, {"LOCAL_PILOT": queue_definition("LOCAL_PILOT")})
    ... submit jobs with transformation=trf_url("hello.sh") and computingSite="LOCAL_PILOT" ...
    write_payload(workdir / "trf", "hello.sh", "echo hello")
    result = run_pilot(server.base, "LOCAL_PILOT", workdir, timeout=240, max_jobs=3)
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Transformations must start with one of the pilot's whitelisted base URLs; with
#: HARVESTER_WORKDIR set the script is copied from there and this host is never contacted.
TRF_BASE = "http://pandaserver-doma.cern.ch:25080/trf/user"
#: The same for pilot 3.11, whose generic user whitelists the https form.
TRF_BASE_311 = "https://pandaserver-doma.cern.ch/trf/user"
#: Where every URL of the pilot's configuration that is not pandawms points: nobody listens.
CLOSED = "http://127.0.0.1:1"
#: The storage endpoint the log and outputs are "transferred" to (a local directory, with mv).
LOCAL_ENDPOINT = "LOCAL_DISK"

_SAFE_ENV_DROP = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def trf_url(script: str, version: str = "pypi") -> str:
    """The transformation URL for a payload script written with :func:`write_payload`."""
    return f"{TRF_BASE_311 if version == '3.11' else TRF_BASE}/{script}"


def write_payload(trf_dir: Path, script: str, body: str) -> Path:
    """A payload script the pilot will run as ``./<script> <jobPars>`` in the job directory."""
    trf_dir.mkdir(parents=True, exist_ok=True)
    path = trf_dir / script
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def queue_definition(name: str, **overrides: Any) -> dict[str, Any]:
    """A CRIC-style queue entry the pilot can run jobs on with no grid services.

    With ``timefloor`` (minutes) above 0 one pilot keeps asking for jobs until the server has
    none left (the harness ends it at the first "no jobs" reply); with 0 it runs one job. The ``mv`` copytool "transfers" outputs and the log
    into the pilot's ``--output-dir``, which is what lets a job with a log file finish.
    """
    entry: dict[str, Any] = {
        "name": name,
        "nickname": name,
        "panda_resource": name,
        "status": "online",
        "state": "ACTIVE",
        "type": "unified",
        "atlas_site": "LOCAL",  # the pilot's queuedata.site (Rucio site name)
        "corecount": 1,
        "maxrss": 2000,
        "maxtime": 3600,
        "maxwdir": 10000,
        "timefloor": 10,
        "container_type": "",
        "is_cvmfs": False,
        "copytools": {"mv": {}},
        "acopytools": {"pr": ["mv"], "pl": ["mv"], "pw": ["mv"], "default": ["mv"]},
        "astorages": {"pr": [LOCAL_ENDPOINT], "pw": [LOCAL_ENDPOINT], "pl": [LOCAL_ENDPOINT]},
        "params": {},
    }
    entry.update(overrides)
    return entry


def storage_definition(endpoint: str = LOCAL_ENDPOINT) -> dict[str, Any]:
    """The DDM endpoint list the pilot reads (``--storagedata-url``); it must not be empty."""
    return {
        endpoint: {
            "name": endpoint,
            "type": "DATADISK",
            "token": "",
            "is_deterministic": True,
            "state": "ACTIVE",
            "site": "LOCAL",
            "rprotocols": {},
            "arprotocols": {},
            "resource": {"bucket_id": 0},
        }
    }


def load_queues(db_url: str, queues: dict[str, dict[str, Any]]) -> str:
    """Load schedconfig entries into the server's database through pandawms' own queue loader."""
    from pandawms.config import load_settings
    from pandawms.core.queues.catalogue import load_queues as load
    from pandawms.core.runtime import Runtime

    rt = Runtime.from_settings(load_settings(None, {"db_url": db_url}))
    try:
        return load(rt, json.dumps(queues), replace=False)
    finally:
        rt.engine.dispose()


def pilot_version() -> str | None:
    """The installed panda-pilot version, or None when it is not installed."""
    if importlib.util.find_spec("pilot") is None:
        return None
    try:
        return importlib.metadata.version("panda-pilot")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def unavailable_reason() -> str | None:
    """Why the real pilot cannot run here (None when it can); tests skip with this reason."""
    version = pilot_version()
    if version is None:
        return "panda-pilot is not installed (pip install -e '.[test]')"
    if sys.version_info >= (3, 13):
        return "panda-pilot 3.7 imports 'pipes', removed in Python 3.13"
    reason = _system_reason()
    if reason is not None:
        return reason
    try:
        pilot_script()
    except RuntimeError as exc:
        return str(exc)
    return None


@functools.cache
def _system_reason() -> str | None:
    """What the machine lacks to run any pilot safely (None when nothing)."""
    for tool in ("unshare", "curl", "tar", "ps"):
        if shutil.which(tool) is None:
            return f"the real pilot needs '{tool}' (apt-get install util-linux curl tar procps)"
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --pid does not work here: {exc}"
    if probe.returncode != 0:
        return (
            "unshare --pid --fork --mount-proc is not permitted here (needs root or CAP_SYS_ADMIN): "
            + (probe.stderr.decode(errors="replace").strip()[:200])
        )
    return None


@functools.cache
def pilot_script() -> Path:
    """The pilot launcher ``pilot.py`` of the installed version, fetched from its sdist once."""
    given = os.environ.get("PANDAWMS_PILOT_SCRIPT")
    if given:
        return Path(given)
    version = pilot_version()
    cache = Path(os.environ.get("PANDAWMS_PILOT_CACHE") or Path.home() / ".cache" / "pandawms")
    target = cache / f"panda-pilot-{version}" / "pilot.py"
    if target.is_file():
        return target
    download = cache / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"panda-pilot=={version}",
            "-d",
            str(download),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    archives = sorted(download.glob(f"panda[-_]pilot-{version}.tar.gz"))
    if fetched.returncode != 0 or not archives:
        raise RuntimeError(
            f"cannot fetch the sdist of panda-pilot {version} for its pilot.py "
            f"(set PANDAWMS_PILOT_SCRIPT to a copy): {fetched.stderr.strip()[-300:]}"
        )
    with tarfile.open(archives[0]) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/pilot.py") and m.isfile()), None)
        source = tar.extractfile(member) if member is not None else None
        if source is None:
            raise RuntimeError(f"{archives[0]} has no pilot.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(source.read())
        partial.replace(target)
    return target


#: The newest pilot, run from its source tarball.
PILOT3_VERSION = "3.11.5.1"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Flavour:
    """Where one pilot version's launcher and default configuration are."""

    version: str
    launcher: Path
    default_cfg: Path
    #: The PyPI launcher must not sit beside an installed ``pilot`` package under its own name,
    #: so it is copied into the work dir; the tarball's runs in place, next to its package.
    copy_launcher: bool


def pilot3_tarball() -> Path | None:
    """The pilot 3.11 source tarball, if it is where the project expects it."""
    given = os.environ.get("PANDAWMS_PILOT3_TARBALL")
    candidates = [Path(given)] if given else []
    candidates.append(_PROJECT_ROOT.parent / "shared" / "clients" / f"pilot3-{PILOT3_VERSION}.tar.gz")
    return next((c for c in candidates if c.is_file()), None)


@functools.cache
def pilot3_tree() -> Path:
    """The unpacked ``pilot3/`` folder of the tarball (unpacked once into the cache dir)."""
    tarball = pilot3_tarball()
    if tarball is None:
        raise RuntimeError(
            f"the pilot {PILOT3_VERSION} source tarball is not at ../shared/clients/ beside the project "
            "(or PANDAWMS_PILOT3_TARBALL)"
        )
    cache = Path(os.environ.get("PANDAWMS_PILOT_CACHE") or Path.home() / ".cache" / "pandawms")
    target = cache / f"pilot3-{PILOT3_VERSION}"
    tree = target / "pilot3"
    if (tree / "pilot.py").is_file() and (target / ".complete").is_file():
        return tree
    partial = cache / f".pilot3-{PILOT3_VERSION}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(partial, filter="data")
    (partial / ".complete").write_text(str(tarball))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return tree


def flavour(name: str) -> Flavour:
    """``"pypi"`` (the installed panda-pilot) or ``"3.11"`` (the source tarball)."""
    if name == "3.11":
        tree = pilot3_tree()
        return Flavour(PILOT3_VERSION, tree / "pilot.py", tree / "pilot" / "util" / "default.cfg", False)
    from pilot.util import config as pilot_config  # the installed package's own default.cfg

    return Flavour(
        pilot_version() or "?",
        pilot_script(),
        Path(pilot_config.__file__).with_name("default.cfg"),
        True,
    )


@functools.cache
def unavailable_reason_311() -> str | None:
    """Why pilot 3.11 cannot run here (None when it can)."""
    if pilot3_tarball() is None:
        return (
            f"pilot {PILOT3_VERSION} source tarball not found at ../shared/clients/pilot3-{PILOT3_VERSION}.tar.gz "
            "beside the project (or PANDAWMS_PILOT3_TARBALL)"
        )
    reason = _system_reason()
    if reason is not None:
        return reason
    try:
        pilot3_tree()
    except (OSError, tarfile.TarError, RuntimeError) as exc:
        return f"cannot unpack the pilot {PILOT3_VERSION} tarball: {exc}"
    return None


_PRMON = """#!{python}
# Stand-in for the site's prmon (ATLAS pilots start it beside the payload): waits for the
# payload to end, then writes the JSON summary the pilot reads its memory figures from.
import json, os, sys, time
args = sys.argv[1:]
pid = args[args.index("--pid") + 1]
summary = args[args.index("--json-summary") + 1]
def alive():
    try:
        with open(f"/proc/{{pid}}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False
while alive():
    time.sleep(0.5)
mem = {{"rss": 20000, "vmem": 60000, "swap": 0, "pss": 18000, "rchar": 0, "wchar": 0,
        "read_bytes": 0, "write_bytes": 0}}
with open(summary + ".part", "w") as out:
    json.dump({{"Max": mem, "Avg": mem}}, out)
os.replace(summary + ".part", summary)
"""


def atlas_site_env(root: Path) -> dict[str, str]:
    """What an ATLAS pilot finds on a grid node and this machine lacks, for a trivial payload.

    The ATLAS user plugin checks CVMFS at start (``NO_CVMFS_OK`` skips that check), runs the
    payload of a job without ``swRelease`` as ``python <transformation> <jobPars>`` with no
    ``asetup`` (so no ALRB), and starts ``lsetup prmon; prmon ...`` beside it; without a prmon
    the pilot waits a minute for its summary. ``lsetup`` (an ALRB alias) and ``prmon`` get small
    stand-ins here, and ``python`` is this interpreter.
    """
    bin_dir = root / "site-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    lsetup = bin_dir / "lsetup"
    lsetup.write_text("#!/bin/sh\nexit 0\n")
    prmon = bin_dir / "prmon"
    prmon.write_text(_PRMON.format(python=sys.executable))
    for path in (lsetup, prmon):
        path.chmod(0o755)
    python = bin_dir / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    return {"NO_CVMFS_OK": "1", "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def _loopback(base_url: str) -> tuple[str, int]:
    """(scheme://host, port) of a loopback URL; anything else is refused."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    if not loop or parts.port is None:
        raise ValueError(f"the real pilot is only ever pointed at a loopback server with a port: {base_url}")
    return f"{parts.scheme}://{host}", parts.port


def write_pilot_config(
    path: Path, base_url: str, storage_file: Path, heartbeat: int = 60, default_cfg: Path | None = None
) -> Path:
    """The pilot's default.cfg with pandawms as its server and every other URL made unreachable.

    Only URLs and the heartbeat period change: the pilot's waits (``update_sleep`` after a
    failed server call) keep their real values, so a test sees what a real pilot would wait.
    """
    default = (default_cfg or flavour("pypi").default_cfg).read_text()
    schedconfig = f"{base_url}/cache/schedconfig"
    fixed = {
        "pandaserver": base_url,
        "iddsserver": CLOSED,
        "queuedata_url": schedconfig + "/{pandaqueue}.all.json",
        "queues_url": schedconfig + "/schedconfig.all.json",
        "storages_url": str(storage_file),
        "heartbeat": str(heartbeat),
        "debug_heartbeat": str(heartbeat),
    }
    lines = []
    for line in default.splitlines():
        key, sep, _ = line.partition(":")
        name = key.strip()
        if sep and not line.lstrip().startswith("#") and name in fixed:
            line = f"{name}: {fixed[name]}"
        elif not line.lstrip().startswith("#"):
            line = re.sub(r"https?://[^\s;,'\"]+", CLOSED, line)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class PilotRun:
    """One pilot process: its exit code, its log, and the PandaIDs it was given."""

    exit_code: int
    log_path: Path
    stdout_path: Path
    job_ids: list[int]
    seconds: float
    timed_out: bool = False
    #: The server answered "no jobs" at least once (the pilot then ends: ``-x 1``).
    drained: bool = False
    #: Wall-clock time (``time.time()``) the pilot process was started.
    started_at: float = 0.0


@dataclass
class PilotResult:
    """What :func:`run_pilot` did: every pilot process it ran, in order."""

    runs: list[PilotRun] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every pilot exited 0, else the first non-zero exit code (-9 for a timeout)."""
        return next((r.exit_code for r in self.runs if r.exit_code != 0), 0)

    @property
    def log_path(self) -> Path:
        """The last pilot's log (``log_paths`` has them all)."""
        return self.runs[-1].log_path

    @property
    def log_paths(self) -> list[Path]:
        """Every pilot's log, in order."""
        return [r.log_path for r in self.runs]

    @property
    def job_ids(self) -> list[int]:
        """Every PandaID the pilots received, in order."""
        return [pid for r in self.runs for pid in r.job_ids]

    def logs(self) -> str:
        """All pilot logs and outputs, for assertion messages."""
        parts = []
        for run in self.runs:
            for path in (run.log_path, run.stdout_path):
                if path.is_file():
                    parts.append(f"==== {path}\n{path.read_text(errors='replace')[-20000:]}")
        return "\n".join(parts)


def _job_ids(log_text: str) -> list[int]:
    found: list[int] = []
    for match in re.finditer(r"[\"']PandaID[\"']:\s*[\"']?(\d+)", log_text):
        pid = int(match.group(1))
        if pid not in found:
            found.append(pid)
    return found


def _pilot_env(base_url: str, trf_dir: Path, cfg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SAFE_ENV_DROP}
    env.update(
        PILOT_NOKILL="1",  # never kill "orphans": outside a namespace they are other people's
        HARVESTER_WORKDIR=str(trf_dir),  # payload scripts are copied from here, not downloaded
        HARVESTER_PILOT_CONFIG=str(cfg),
        LOCAL_AGIS_SCHEDCONF=f"{base_url}/cache/schedconfig/schedconfig.all.json",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        X509_USER_PROXY="",
        X509_CERT_DIR="",
    )
    env.pop("PYTHONPATH", None)
    return env


def run_one_pilot(
    server_base_url: str,
    queue: str,
    workdir: Path,
    timeout: float = 300,
    job_label: str = "user",
    trf_dir: Path | None = None,
    debug: bool = True,
    version: str = "pypi",
    pilot_user: str = "generic",
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    heartbeat: int = 60,
    storage: dict[str, Any] | None = None,
) -> PilotRun:
    """Run one pilot process to its end (or kill its namespace after ``timeout`` seconds).

    ``version`` is ``"pypi"`` (the installed panda-pilot) or ``"3.11"`` (the source tarball);
    ``pilot_user`` the pilot's ``--pilot-user`` plugin (``generic`` or ``atlas``);
    ``storage`` the DDM endpoint list the pilot reads (default :func:`storage_definition`).
    """
    kind = flavour(version)
    storage_data = storage
    host, port = _loopback(server_base_url)
    base = f"{host}:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    trf_dir = trf_dir or workdir / "trf"
    trf_dir.mkdir(parents=True, exist_ok=True)
    output_dir = workdir / "se"
    output_dir.mkdir(exist_ok=True)
    storage = workdir / "ddmendpoints.json"
    storage.write_text(json.dumps(storage_definition() if storage_data is None else storage_data))
    cfg = write_pilot_config(workdir / "pilot.cfg", base, storage, heartbeat, default_cfg=kind.default_cfg)
    launcher = kind.launcher
    if kind.copy_launcher:
        # Never "pilot.py": a file of that name beside the script shadows the ``pilot`` package.
        launcher = workdir / "pilot3_main.py"
        shutil.copyfile(kind.launcher, launcher)
    pilot_home = workdir / "home"
    pilot_home.mkdir(exist_ok=True)
    stdout_path = workdir / "pilot_stdout.txt"
    cmd = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        sys.executable,
        str(launcher),
        "-q",
        queue,
        "--pilot-user",
        pilot_user,
        "-w",
        "generic",
        "-j",
        job_label,
        "--url",
        host,
        "-p",
        str(port),
        "--queuedata-url",
        f"{base}/cache/schedconfig/{{pandaqueue}}.all.json",
        "--storagedata-url",
        str(storage),
        "--use-rucio-traces",
        "False",
        "-t",
        "-l",
        str(int(timeout)),
        "-v",
        "1",
        "-x",
        "1",
        "--output-dir",
        str(output_dir),
        "-a",
        str(pilot_home),
        "--cleanup",
        "False",
    ]
    if debug:
        cmd.append("-d")
    cmd.extend(extra_args)
    env = _pilot_env(base, trf_dir, cfg)
    if version == "3.11":
        # Its HTTP helper loads the proxy as client certificate even for http:// (and fails
        # every call without one): give it a self-made certificate and key.
        from tests.certs import make_pki

        env["X509_USER_PROXY"] = str(make_pki(workdir / "pki").proxy)
    env.update(extra_env or {})
    started = time.monotonic()
    started_at = time.time()
    timed_out = False
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=pilot_home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # unshare and the namespace's init share this session; when init dies the kernel
            # kills everything else in the namespace.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = -9
    logs = sorted(pilot_home.rglob("pilotlog.txt"), key=lambda p: p.stat().st_mtime)
    log_path = logs[-1] if logs else stdout_path
    text = "\n".join(p.read_text(errors="replace") for p in logs) + stdout_path.read_text(errors="replace")
    return PilotRun(
        code,
        log_path,
        stdout_path,
        _job_ids(text),
        time.monotonic() - started,
        timed_out,
        drained="did not get a job" in text,
        started_at=started_at,
    )


def run_pilot(
    server_base_url: str,
    queue: str,
    workdir: Path,
    timeout: float = 300,
    max_jobs: int = 1,
    job_label: str = "user",
    trf_dir: Path | None = None,
    version: str = "pypi",
    pilot_user: str = "generic",
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    storage: dict[str, Any] | None = None,
) -> PilotResult:
    """Run real pilots on ``queue`` until ``max_jobs`` jobs ran, one got no job, or time is up.

    Each pilot runs in ``workdir/pilot-<n>``; payload scripts are read from ``trf_dir``
    (default ``workdir/trf``). On a queue with a ``timefloor`` (as :func:`queue_definition`
    makes) one pilot runs job after job and ends at the first "no jobs" reply; on a queue with
    ``timefloor`` 0 each pilot runs one job, so this starts up to ``max_jobs`` pilots one after
    another. ``max_jobs`` is not a hard cap in the first case: a pilot takes whatever is there. ``timeout``
    bounds the whole call. The pilot's exit code alone says little (it is 0 after "no job"
    too): check the jobs' states on the server.
    """
    reason = unavailable_reason_311() if version == "3.11" else unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    trf_dir = trf_dir or workdir / "trf"
    result = PilotResult()
    deadline = time.monotonic() + timeout
    while len(result.job_ids) < max_jobs:
        left = deadline - time.monotonic()
        if left < 20:
            break
        run = run_one_pilot(
            server_base_url,
            queue,
            workdir / f"pilot-{len(result.runs) + 1}",
            left,
            job_label=job_label,
            trf_dir=trf_dir,
            version=version,
            pilot_user=pilot_user,
            extra_env=extra_env,
            extra_args=extra_args,
            storage=storage,
        )
        result.runs.append(run)
        if not run.job_ids or run.timed_out or run.drained:
            break
    return result
