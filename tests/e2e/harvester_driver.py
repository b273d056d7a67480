"""Drives Harvester's own PanDA communicator against a pandawms server (run as a script).

Not a test module: ``harvester_real_check.py`` runs it in an interpreter that has Harvester's
source and its dependencies, with ``PANDA_HOME`` pointing at a Harvester configuration whose
``[pandacon]`` names the server. It submits nothing itself; it reads the PandaIDs of two
activated jobs at queue ``HV_QUEUE`` from argv, runs the whole Harvester cycle (heartbeat, get
jobs, report workers linked to the jobs, job updates, worker statistics, commands) through the
communicator's public methods, and prints one ``RESULT:`` JSON line with what it saw.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any


def main() -> None:
    from pandaharvester.harvestercommunicator.panda_communicator import PandaCommunicator
    from pandaharvester.harvestercore.diag_spec import DiagSpec
    from pandaharvester.harvestercore.job_spec import JobSpec
    from pandaharvester.harvestercore.work_spec import WorkSpec

    comm = PandaCommunicator()
    out: dict[str, Any] = {}
    out["check_panda"] = comm.check_panda()[0]
    out["is_alive"] = list(
        comm.is_alive({"startTime": datetime.datetime(2026, 1, 2, 3, 4, 5), "sw_version": "0.6"})
    )
    out["max_worker_id_before"] = list(comm.get_max_worker_id())
    jobs, message = comm.get_jobs("HV_QUEUE", "hv-node", "managed", "hv-ce", 2, {})
    out["get_jobs"] = [[j["PandaID"] for j in jobs], message]

    workers = []
    for number, job in enumerate(jobs, start=41):
        work = WorkSpec()
        work.workerID = number
        work.batchID = f"batch.{number}"
        work.computingSite = "HV_QUEUE"
        work.queueName = "HV_QUEUE"
        work.resourceType = "SCORE"
        work.jobType = "managed"
        work.nCore = 1
        work.submissionHost = "hv-submit"
        work.set_status(WorkSpec.ST_running)
        work.submitTime = datetime.datetime(2026, 1, 2, 3, 0, 0)
        work.pandaid_list = [job["PandaID"]]
        workers.append(work)
    out["update_workers"] = list(comm.update_workers(workers))
    out["max_worker_id_after"] = list(comm.get_max_worker_id())

    specs = []
    for job in jobs:
        spec = JobSpec()
        spec.convert_job_json(job)
        spec.computingSite = "HV_QUEUE"
        spec.status = "running"
        spec.set_attributes({"startTime": datetime.datetime(2026, 1, 2, 3, 5, 0), "cpuConsumptionTime": 12})
        specs.append(spec)
    out["update_jobs_running"] = comm.update_jobs(specs, "hv-1")
    out["check_jobs"] = comm.check_jobs(specs)

    out["update_worker_stats"] = list(
        comm.update_worker_stats("HV_QUEUE", {"managed": {"SCORE": {"running": 2, "submitted": 1}}})
    )
    out["worker_stats"] = comm.get_worker_stats_from_panda()[0]
    out["service_metrics"] = list(
        comm.update_service_metrics(
            [["2026-01-02 03:06:00.000000", "hv-host", json.dumps({"rss_mib": 100.5})]]
        )
    )
    dialog = DiagSpec()
    dialog.diagID = 1
    dialog.moduleName = "submitter"
    dialog.identifier = "HV_QUEUE"
    dialog.creationTime = datetime.datetime(2026, 1, 2, 3, 7, 0)
    dialog.messageLevel = "ERROR"
    dialog.diagMessage = "failed to submit"
    out["dialogs"] = list(comm.send_dialog_messages([dialog]))
    # the first job is killed by the test between the two phases; wait for the go on stdin
    print("READY", flush=True)
    sys.stdin.readline()
    commands = comm.get_commands(10)
    out["commands"] = commands
    out["commands_again"] = comm.get_commands(10)
    out["ack"] = comm.ack_commands([c["command_id"] for c in commands])
    final = specs[1]
    final.status = "finished"
    final.set_attributes({"endTime": datetime.datetime(2026, 1, 2, 3, 9, 0), "transExitCode": 0})
    final.outputFilesToReport = json.dumps({})
    out["update_jobs_final"] = comm.update_jobs([final], "hv-1")
    print("RESULT:" + json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
