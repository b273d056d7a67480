"""The access log's buffered file handler: lines arrive within its interval, none is lost."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pandawms.logsetup import BufferedFileHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_lines_reach_the_file_within_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(str(path), interval=0.05)
    logger = _logger(handler, "test.buffered.interval")
    try:
        for i in range(10):
            logger.info("request %d", i)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and path.read_text().count("\n") < 10:
            time.sleep(0.02)
        assert path.read_text().splitlines() == [f"request {i}" for i in range(10)]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_a_full_batch_is_written_at_once_and_close_writes_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(str(path), interval=3600, max_lines=4)
    logger = _logger(handler, "test.buffered.batch")
    for i in range(6):
        logger.info("request %d", i)
    assert path.read_text().splitlines() == [f"request {i}" for i in range(4)]
    logger.removeHandler(handler)
    handler.close()
    assert path.read_text().splitlines() == [f"request {i}" for i in range(6)]


def test_reopen_writes_waiting_lines_to_the_file_they_belong_to(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(str(path), interval=3600)
    logger = _logger(handler, "test.buffered.reopen")
    logger.info("before rotation")
    path.rename(tmp_path / "access.log.1")
    handler.reopen()
    logger.info("after rotation")
    logger.removeHandler(handler)
    handler.close()
    assert (tmp_path / "access.log.1").read_text() == "before rotation\n"
    assert path.read_text() == "after rotation\n"
