"""The real panda-client 2.2.0 (from PyPI) against the real server process."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerProcess
from tests.e2e.clients import client_env, run_client

SCRIPT = r"""
import json
from pandaclient import Client, JobSpec, FileSpec

def job(name, site="LOCAL_TEST"):
    j = JobSpec.JobSpec()
    j.jobDefinitionID = 7
    j.jobName = name
    j.transformation = "http://pandaserver-doma.cern.ch:25080/trf/user/hello.sh"
    j.prodSourceLabel = "user"
    j.assignedPriority = 1000
    j.currentPriority = 1000
    j.computingSite = site
    j.jobParameters = "echo hello"
    j.VO = "atlas"
    log = FileSpec.FileSpec()
    log.lfn = name + ".log.tgz"
    log.type = "log"
    log.dataset = "user.tester.log"
    log.destinationDBlock = "user.tester.log"
    j.addFile(log)
    return j

out = {}
out["hello"] = Client.hello()
status, answers = Client.submitJobs([job("a"), job("b")])
out["submit"] = [status, answers]
ids = [a[0] for a in answers]
status, jobs = Client.getJobStatus(ids + [10**9])
out["status"] = [status, [None if j is None else [j.PandaID, j.jobStatus, j.prodUserName, j.creationTime.isoformat(),
                          j.Files[0].lfn, j.Files[0].type, j.jobParameters] for j in jobs]]
out["kill"] = Client.killJobs(ids[:1])
status, jobs = Client.getFullJobStatus(ids)
out["after_kill"] = [status, [[j.PandaID, j.jobStatus, j.commandToPilot] for j in jobs]]
print("RESULT:" + json.dumps(out))
"""


def test_hello_submit_status_kill(server: ServerProcess, tmp_path: Path) -> None:
    result = run_client(SCRIPT, client_env(server.base, tmp_path))
    assert result["hello"] == [0, ""]
    status, answers = result["submit"]
    assert status == 0 and len(answers) == 2
    (a, def_a, jobset_a), (b, _, jobset_b) = answers
    assert def_a == 7 and jobset_a == jobset_b == {"jobsetID": a}
    status, described = result["status"]
    assert status == 0
    assert described[2] is None
    assert described[0][:3] == [a, "activated", "anonymous"]
    assert described[0][4:] == ["a.log.tgz", "log", "echo hello"]
    assert result["kill"] == [0, [True]]
    assert result["after_kill"] == [0, [[a, "cancelled", "tobekilled"], [b, "activated", "NULL"]]]


def test_token_identity_names_the_owner(sqlite_server: ServerProcess, tmp_path: Path) -> None:
    claims = {
        "sub": "u-1",
        "name": "jane doe",
        "preferred_username": "jdoe",
        "groups": ["atlas"],
        "exp": 4102444800,
    }
    script = SCRIPT.replace('print("RESULT:"', 'out["attrs"] = Client.get_cert_attributes()\nprint("RESULT:"')
    result = run_client(script, client_env(sqlite_server.base, tmp_path, claims))
    assert result["status"][1][0][2] == "Jane Doe"
    status, attrs = result["attrs"]
    assert status == 0
    assert attrs == {
        # the subject (and the issuer, when the token names one) makes the owner; the name is for display
        "GRST_CRED_0": "X509USER 0 0 0 /OU=u-1/CN=Jane Doe/CN=nickname:jdoe",
        "GRST_CRED_1": "VOMS 0 0 0 /atlas",
    }
