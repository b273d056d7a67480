"""Skipping for a missing program or package, turned into a failure where CI must run everything.

Tests that drive a real outside program (Chromium, HAProxy, squid, the real pilot...) skip with the
reason when it is absent on a developer's machine. ``.ci/run`` installs those programs and sets
``PANDA_TEST_REQUIRE_TOOLS=1``, so there a missing one fails the run instead of silently skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_TOOLS = os.environ.get("PANDA_TEST_REQUIRE_TOOLS") == "1"


def missing(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when CI requires every tool."""
    if REQUIRE_TOOLS:
        pytest.fail(f"required for CI: {reason}", pytrace=False)
    pytest.skip(reason)
