"""``data_carousel/*`` on a strict server over HTTPS: production role only, as on the real server.

A plain user (the test PKI's proxy) is refused every method with 403 before anything happens; the
production identity gets the real server's answers (here: no such request, since this server has
no staging request) and the calls are audited. A dataset name longer than the column is refused
with the reason.
"""

from __future__ import annotations

import subprocess
import sys

from tests.certs import Pki
from tests.e2e.httpd_proc import Httpd
from tests.e2e.test_v1_operator_api import BOSS_CN, _post, pki, strict  # noqa: F401 - fixtures

METHODS = ("change_staging_destination", "change_staging_source", "force_to_staging", "retire_unused")


def test_data_carousel_methods_need_the_production_role(strict: Httpd, pki: Pki) -> None:  # noqa: F811
    boss = pki.add_user(BOSS_CN)
    for name in METHODS:
        code, reply = _post(strict, pki, pki.proxy, f"data_carousel/{name}", {"request_id": 1})
        assert code == 403 and not reply["success"], (name, reply)
        assert "production" in reply["message"]
    for name in METHODS:
        code, reply = _post(strict, pki, boss, f"data_carousel/{name}", {"request_id": 1, "dataset": "a:b"})
        assert (code, reply) == (
            200,
            {"success": False, "message": "failed to get corresponding request", "data": None},
        )
    code, reply = _post(strict, pki, boss, "data_carousel/force_to_staging", {"dataset": "s:" + "x" * 400})
    # Argument errors are answered in the envelope, as for every v1 method.
    assert not reply["success"] and "dataset must be at most 256" in reply["message"], (code, reply)
    code, reply = _post(strict, pki, boss, "data_carousel/retire_unused", {"request_id": "one"})
    assert not reply["success"] and "request_id must be an integer" in reply["message"], (code, reply)
    audit = subprocess.run(
        [sys.executable, "-m", "pandawms", "audit"],
        env=strict.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "data_carousel/force_to_staging" in audit.stdout, audit.stdout[-2000:]
