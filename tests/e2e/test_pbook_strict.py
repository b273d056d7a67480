"""Strict mode for pbook's secrets, debug mode and token calls: each caller only what is theirs.

Users hold verified tokens (as panda-client sends them); a pilot holds a pilot token.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, select

from pandawms.db.schema import jobs
from tests.conftest import ServerProcess
from tests.e2e.clients import client_env, run_client
from tests.e2e.test_auth_strict import _token, signing_key, token_server  # noqa: F401
from tests.jobs import make_job, state_list

SECRETS = r"""
import json, sys
from pandaclient import Client
out = {}
if sys.argv[1:] == ["set"]:
    out["set"] = Client.set_user_secret("MB_PASSWORD", "jane-only")
out["list"] = Client.get_user_secrets()
print("RESULT:" + json.dumps(out))
"""


def _client(server: ServerProcess, home: Path, token: str) -> dict[str, str]:
    env = client_env(server.base, home)
    env.update(PANDA_AUTH="oidc", PANDA_AUTH_VO="atlas", PANDA_AUTH_ID_TOKEN=token)
    return env


def _headers(token: str, origin: str = "atlas") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Origin": origin, "Accept": "application/json"}


def test_each_caller_only_what_is_theirs(
    token_server: ServerProcess,  # noqa: F811
    signing_key: rsa.RSAPrivateKey,  # noqa: F811
    tmp_path: Path,
) -> None:
    base = token_server.base
    jane = _token(signing_key)
    john = _token(signing_key, sub="u-43", name="john roe", preferred_username="jroe")
    pilot = _token(signing_key, sub="p-1", name="pilot one", groups=["atlas", "atlas/pilot"])

    # Secrets: Jane sets one; John, through the same client, sees only his own (none).
    set_script = SECRETS.replace("sys.argv[1:]", '["set"]')
    jane_view = run_client(set_script, _client(token_server, tmp_path / "jane", jane))
    assert jane_view["set"] == [0, [True, None]]
    assert jane_view["list"] == [0, [True, {"MB_PASSWORD": "jane-only"}]]
    john_view = run_client(SECRETS, _client(token_server, tmp_path / "john", john))
    assert john_view["list"] == [0, [True, {}]]
    # Asking by name for Jane's keys gives John nothing either: the owner is the caller.
    by_key = httpx.get(
        base + "/api/v1/creds/get_user_secrets", params={"keys": "MB_PASSWORD"}, headers=_headers(john)
    )
    assert by_key.json() == {"success": True, "message": "", "data": "{}"}
    # Without an identity: refused before anything is read.
    anonymous = httpx.get(base + "/api/v1/creds/get_user_secrets")
    assert anonymous.status_code == 401 and anonymous.json()["success"] is False
    anonymous_set = httpx.post(base + "/api/v1/creds/set_user_secrets", json={"key": "k", "value": "v"})
    assert anonymous_set.status_code == 401
    # A pilot token is not a user: the v1 call is refused; the pilot's own legacy call reads only
    # the pilot's secrets (none), never Jane's.
    pilot_v1 = httpx.get(base + "/api/v1/creds/get_user_secrets", headers=_headers(pilot, "atlas.pilot"))
    assert pilot_v1.status_code == 403 and "role user required" in pilot_v1.json()["message"]
    pilot_legacy = httpx.post(
        base + "/server/panda/get_user_secrets",
        headers=_headers(pilot, "atlas.pilot"),
        data={"get_json": "True", "keys": "MB_USERNAME,MB_PASSWORD"},
    )
    assert pilot_legacy.status_code == 200 and pilot_legacy.json() == [True, {}]

    # Access tokens are for pilots: a user is refused; a pilot hears what to configure.
    user_token = httpx.get(
        base + "/api/v1/creds/get_access_token",
        params={"client_name": "pilot_server"},
        headers=_headers(jane),
    )
    assert user_token.status_code == 403 and "pilot" in user_token.json()["message"]
    pilot_token = httpx.get(
        base + "/api/v1/creds/get_access_token",
        params={"client_name": "pilot_server"},
        headers=_headers(pilot, "atlas.pilot"),
    ).json()
    assert pilot_token["success"] is False
    assert "no token issuer configured: set PANDA_TOKEN_ENDPOINT" in pilot_token["message"]

    # Debug mode: only the owner of the job (John is refused and nothing changes).
    submitted = httpx.post(
        base + "/api/v1/job/submit",
        headers=_headers(jane),
        json={"jobs": json.dumps([state_list(make_job())])},
    ).json()
    panda_id = submitted["data"][0][0]
    debug = (
        "import json\nfrom pandaclient import Client\n"
        f"print('RESULT:' + json.dumps(Client.setDebugMode({panda_id}, True, False)))"
    )
    assert run_client(debug, _client(token_server, tmp_path / "john", john)) == [255, None]
    refused = httpx.post(
        base + "/api/v1/job/set_debug_mode", json={"job_id": panda_id, "mode": True}, headers=_headers(john)
    ).json()
    assert refused == {
        "success": False,
        "message": "Permission denied. Not the owner or production manager",
        "data": "Permission denied. Not the owner or production manager",
    }
    engine = create_engine(token_server.db_url)
    with engine.connect() as conn:
        handling = conn.execute(select(jobs.c.specialHandling).where(jobs.c.PandaID == panda_id)).scalar()
    assert "debug" not in (handling or "")
    assert run_client(debug, _client(token_server, tmp_path / "jane", jane)) == [0, "Succeeded"]
    with engine.connect() as conn:
        handling = conn.execute(select(jobs.c.specialHandling).where(jobs.c.PandaID == panda_id)).scalar()
    engine.dispose()
    assert "debug" in handling.split(",")
    # The iDDS relay also needs a user.
    relay = httpx.post(base + "/server/panda/execute_idds_workflow_command", data={"command_name": "x"})
    assert relay.status_code == 401
