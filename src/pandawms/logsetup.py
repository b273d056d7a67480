"""Logging: one format for every component, to stderr and optionally to files in the log dir."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "INFO", log_dir: str = "", component: str = "pandawms") -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(log_dir, f"{component}.log"))
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pandawms.access").setLevel(level)
