"""The server's file cache: the directory holding sandboxes and worker logs, and safe file names.

Production mounts it shared between nodes. Sandboxes (the task layer) and Harvester's worker logs
live there side by side, so the place and the naming rule sit below both domains.
"""

from __future__ import annotations

import re
from pathlib import Path

from pandawms.config import Settings
from pandawms.model.errors import PandaError

#: Names a cached file may have: one path component of ordinary characters, no dot first.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}$")


def cache_dir(settings: Settings) -> Path:
    """The directory holding cached files (created on first use)."""
    path = Path(settings.cache_dir) if settings.cache_dir else Path(settings.data_dir) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name: str) -> str:
    """``name`` if it is a safe file name (no directory parts, no traversal), else refuse."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise PandaError(
            f"Argument error: file name {name[:80]!r} is not allowed "
            "(letters, digits and . _ + - only, not starting with a dot, at most 200 characters)"
        )
    return name
