"""Harvester's own source and an interpreter that can run its PanDA communicator, for tests.

Harvester is not on the package index; its unmodified source tarball sits next to the project
(``<project root>/../shared/clients/harvester-*.tar.gz``, here and in CI). Its communicator needs
``requests``, ``panda-common``, ``pyjwt``, ``psutil``, ``pycryptodomex`` and ``rpyc``, which are on
the index: they go into a virtualenv of their own, built once and cached under
``~/.cache/pandawms`` (keyed by the Python version and the package list).

Harvester imports ``liveconfigparser``, ``pandalogger`` and ``pandautils`` as top-level names;
panda-common installs them as ``pandacommon.<name>``. Instead of editing Harvester, the venv gets
a ``.pth`` file that installs an import hook mapping each top-level name to the one module object
of panda-common (so ``pandalogger.PandaLogger`` *is* ``pandacommon.pandalogger.PandaLogger``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where the client tarballs are: ``PANDAWMS_CLIENTS_DIR``, else ``<project root>/../shared/clients``
#: (CI, and a checkout next to ``shared``), else one level further up (a git worktree in a subfolder).
_CANDIDATES = [
    Path(p)
    for p in (
        os.environ.get("PANDAWMS_CLIENTS_DIR", ""),
        PROJECT_ROOT.parent / "shared" / "clients",
        PROJECT_ROOT.parent.parent / "shared" / "clients",
    )
    if str(p)
]
CLIENTS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
PACKAGES = ("requests", "panda-common", "pyjwt", "psutil", "pycryptodomex", "rpyc")

#: The import hook written into the venv (imported by its .pth file at interpreter start).
ALIAS_MODULE = '''"""Harvester imports panda-common's packages by their old top-level names: map them."""

import importlib
import importlib.abc
import importlib.util
import sys

_NAMES = ("liveconfigparser", "pandalogger", "pandautils")


class _Alias(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target
        self.spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias spec on the module: give it back its own
        module.__spec__ = self.spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] not in _NAMES:
            return None
        real = "pandacommon." + fullname
        try:
            if importlib.util.find_spec(real) is None:
                return None
        except ModuleNotFoundError:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(real))


sys.meta_path.append(_Finder())
'''


def tarball() -> Path | None:
    """The Harvester source tarball, if present."""
    found = sorted(CLIENTS.glob("harvester-*.tar.gz"))
    return found[-1] if found else None


def unpack(archive: Path, into: Path) -> Path:
    """Unpack the tarball (read-only input) and return its ``harvester`` source folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    src = into / "harvester"
    if not (src / "pandaharvester" / "harvestercommunicator" / "panda_communicator.py").is_file():
        raise RuntimeError(f"{archive} does not hold harvester/pandaharvester/...")
    return src


def _venv_key() -> str:
    text = f"{sys.version_info[:3]}|{sorted(PACKAGES)}|{ALIAS_MODULE}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pandawms"


def harvester_python() -> Path:
    """The venv's interpreter, built on first use (pip from the package index) and then reused.

    Built in a temporary folder and renamed into place when complete, so an interrupted build
    is never taken for a finished one.
    """
    root = cache_root()
    final = root / f"harvester-venv-{_venv_key()}"
    python = final / "bin" / "python"
    if (final / ".complete").is_file():
        return python
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".harvester-venv-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(work)], check=True, capture_output=True, timeout=300
        )
        pip = subprocess.run(
            [
                str(work / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *PACKAGES,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if pip.returncode != 0:
            raise RuntimeError(f"pip could not install {' '.join(PACKAGES)}:\n{pip.stdout}\n{pip.stderr}")
        purelib = subprocess.run(
            [str(work / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        site = Path(purelib)
        (site / "_pandawms_harvester_aliases.py").write_text(ALIAS_MODULE)
        (site / "pandawms_harvester_aliases.pth").write_text("import _pandawms_harvester_aliases\n")
        (work / ".complete").write_text("ok\n")
        # venvs hold their own path in scripts; the interpreter itself is what the tests use,
        # and ``python -m venv`` made it a symlink, so the rename keeps it working.
        try:
            work.rename(final)
        except OSError:
            if not (final / ".complete").is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return python


def write_config(home: Path, harvester_id: str, api: str, cert: Path, ca_dir: Path, cache_url_r: str) -> None:
    """Harvester's ``panda_harvester.cfg`` and panda-common's ``panda_common.cfg`` under ``home``.

    ``[pandacon]`` points the communicator at ``api`` (``https://host:port/api/v1``) with a client
    certificate whose file holds certificate and key, verifying the server with ``ca_dir``.
    """
    etc = home / "etc" / "panda"
    etc.mkdir(parents=True, exist_ok=True)
    (home / "log").mkdir(exist_ok=True)
    (etc / "panda_harvester.cfg").write_text(
        f"[master]\nharvester_id = {harvester_id}\nuname =\ngname =\nloggername = harvester\n\n"
        f"[db]\nengine = sqlite\ndatabase_filename = {home}/harvester.db\nverbose = False\n\n"
        f"[pandacon]\nserver_api_url_ssl = {api}\ncache_api_url_ssl = {api}\n"
        f"pandaCacheURL_R = {cache_url_r}\n"
        f"timeout = 60\nverbose = True\nauth_type = x509\n"
        f"cert_file = {cert}\nkey_file = {cert}\nca_cert = {ca_dir}\n\n"
        f"[log]\nlogdir = {home}/log\n"
    )
    # panda-common's logger settings; nothing is sent anywhere (the log hosts are loopback)
    (etc / "panda_common.cfg").write_text(
        "[logger]\nloghost = 127.0.0.1\nmonport-apache = 9\nmethod = GET\nencoding = url\n"
        "loghost_new = 127.0.0.1\nmonport-apache_new = 9\nmethod_new = POST\nencoding_new = json\n"
        f"monurlprefix = /logger\nlogdir = {home}/log\nnemitters = 1\nmigrated = True\nlog_level = DEBUG\n"
        "rotating_policy = none\nrotating_backup_count = 1\nrotating_max_size = 1024\nrotating_interval = 24\n"
    )


__all__ = ["harvester_python", "tarball", "unpack", "write_config"]
