"""A full sandbox cache: an upload is a 503 with Retry-After and leaves no partial file.

The cache directory is a tiny tmpfs mounted for the test (it needs root and a kernel that lets
this process mount; the test skips with the reason otherwise).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted at the end."""
    mount = tmp_path / "cache"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_upload_to_a_full_cache_is_503_without_partial_file(
    tiny_fs: Path, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'full.sqlite'}",
        {
            "PANDA_CACHE_DIR": str(tiny_fs),
            "PANDA_CACHE_MAX_BYTES": str(1024 * 1024),
            "PANDA_BUSY_RETRY_AFTER": "9",
        },
    )
    api = server.base + "/api/v1/file_server/upload_cache_file"
    reply = httpx.post(api, files={"file": ("big.tgz", b"x" * (256 * 1024))}, timeout=60)
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "9"
    body = reply.json()
    assert body["success"] is False and "cache" in body["message"] and "full" in body["message"], body
    left = sorted(str(p.relative_to(tiny_fs)) for p in tiny_fs.rglob("*") if p.is_file())
    assert left == [], "a partial file was left in the cache"
    # What fits still goes in: the failure was the disk's, not the server's.
    small = httpx.post(api, files={"file": ("small.tgz", b"y" * 1024)}, timeout=60)
    assert small.status_code == 200 and small.json()["success"], small.text
    assert (tiny_fs / "small.tgz").read_bytes() == b"y" * 1024
