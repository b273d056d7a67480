"""Drives Harvester's own PanDA communicator against a pandawms server (run as a script).

Not a test module: ``test_harvester_real.py`` runs it with the interpreter of
``harvester_env.harvester_python()``, Harvester's unpacked source on ``PYTHONPATH`` and
``PANDA_HOME`` naming a Harvester configuration whose ``[pandacon]`` points at the server. It
reads one JSON request per line on stdin (``{"step": name, "args": {...}}``), performs the step
with the communicator's public methods and Harvester's own WorkSpec/JobSpec objects (as its
job fetcher, propagator, credential managers and cacher do), and prints one ``RESULT:`` JSON
line per step, so the test can look at the server between steps.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


class Driver:
    """One communicator and the jobs it fetched, kept between steps."""

    def __init__(self) -> None:
        from pandaharvester.harvestercommunicator.panda_communicator import PandaCommunicator

        self.comm = PandaCommunicator()
        self.jobs: dict[int, dict[str, Any]] = {}
        self.work_dir = Path(tempfile.mkdtemp(prefix="hv-driver-"))

    # --- connection and instance -------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        return {
            "check_panda": self.comm.check_panda()[0],
            "is_alive": list(
                self.comm.is_alive(
                    {"startTime": datetime.datetime(2026, 1, 2, 3, 4, 5), "sw_version": "0.7.5"}
                )
            ),
            "max_worker_id": list(self.comm.get_max_worker_id()),
        }

    # --- pull: job fetcher and propagator ------------------------------------------------------

    def get_jobs(self, site: str, n: int) -> dict[str, Any]:
        jobs, message = self.comm.get_jobs(site, "hv-node", "managed", "hv-ce", n, {})
        for job in jobs:
            self.jobs[int(job["PandaID"])] = job
        return {"ids": [j["PandaID"] for j in jobs], "message": message}

    def _job_spec(self, panda_id: int, site: str, status: str) -> Any:
        from pandaharvester.harvestercore.job_spec import JobSpec

        spec = JobSpec()
        spec.convert_job_json(self.jobs[panda_id])
        spec.computingSite = site
        spec.status = status
        spec.nCore = 1
        spec.set_attributes({"startTime": datetime.datetime(2026, 1, 2, 3, 5, 0), "cpuConsumptionTime": 12})
        if status in ("finished", "failed"):
            spec.set_attributes({"endTime": datetime.datetime(2026, 1, 2, 3, 9, 0), "transExitCode": 0})
            spec.outputFilesToReport = json.dumps({})
        return spec

    def update_jobs(self, site: str, status: str, ids: list[int]) -> Any:
        specs = [self._job_spec(i, site, status) for i in ids]
        return self.comm.update_jobs(specs, "hv-propagator")

    def check_jobs(self, site: str, ids: list[int]) -> Any:
        return self.comm.check_jobs([self._job_spec(i, site, "running") for i in ids])

    # --- push: workers, their logs, statistics, commands -----------------------------------------

    def update_workers(self, site: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
        from pandaharvester.harvestercore.work_spec import WorkSpec

        specs = []
        for item in workers:
            work = WorkSpec()
            work.workerID = item["workerID"]
            work.batchID = f"batch.{item['workerID']}"
            work.computingSite = site
            work.queueName = site
            work.resourceType = "SCORE"
            work.jobType = "managed"
            work.nCore = 1
            work.submissionHost = "hv-submit"
            work.set_status(item["status"])
            work.submitTime = datetime.datetime(2026, 1, 2, 3, 0, 0)
            work.pandaid_list = item["pandaids"]
            if item.get("log") is not None:
                log_file = self.work_dir / f"worker{item['workerID']}.out"
                log_file.write_text(item["log"])
                work.set_log_file("stdout", str(log_file))
            specs.append(work)
        results, message = self.comm.update_workers(specs)
        uploads = []
        # what the propagator does for every worker the server accepted
        for work, accepted in zip(specs, results or [], strict=False):
            if not accepted:
                continue
            for path, offset, size, remote in work.get_log_files_to_upload():
                with open(path, "rb") as handle:
                    uploaded, reply = self.comm.upload_file(remote, handle, offset, size)
                if uploaded:
                    work.update_log_files_to_upload(path, offset + size)
                uploads.append({"remote": remote, "ok": uploaded, "reply": reply})
        self.workers = specs
        return {
            "results": results,
            "message": message,
            "uploads": uploads,
            "stdOut": [w.workAttributes.get("stdOut") if w.workAttributes else None for w in specs],
        }

    def append_worker_log(self, workerID: int, text: str) -> list[dict[str, Any]]:
        """More output in a worker's log: the propagator's next pass uploads only the new bytes."""
        uploads = []
        for work in self.workers:
            if work.workerID != workerID:
                continue
            log_file = self.work_dir / f"worker{workerID}.out"
            with open(log_file, "a") as handle:
                handle.write(text)
            for path, offset, size, remote in work.get_log_files_to_upload():
                with open(path, "rb") as handle:
                    uploaded, reply = self.comm.upload_file(remote, handle, offset, size)
                if uploaded:
                    work.update_log_files_to_upload(path, offset + size)
                uploads.append({"remote": remote, "offset": offset, "ok": uploaded, "reply": reply})
        return uploads

    def worker_stats(self, site: str, stats: dict[str, Any]) -> dict[str, Any]:
        return {
            "update": list(self.comm.update_worker_stats(site, stats)),
            "read": self.comm.get_worker_stats_from_panda()[0],
        }

    def commands(self, n: int) -> dict[str, Any]:
        commands = self.comm.get_commands(n)
        again = self.comm.get_commands(n)
        ack = self.comm.ack_commands([c["command_id"] for c in commands])
        return {"commands": commands, "again": again, "ack": ack}

    def reports(self) -> dict[str, Any]:
        from pandaharvester.harvestercore.diag_spec import DiagSpec

        dialog = DiagSpec()
        dialog.diagID = 1
        dialog.moduleName = "submitter"
        dialog.identifier = "HV_QUEUE"
        dialog.creationTime = datetime.datetime(2026, 1, 2, 3, 7, 0)
        dialog.messageLevel = "ERROR"
        dialog.diagMessage = "failed to submit"
        return {
            "service_metrics": list(
                self.comm.update_service_metrics(
                    [["2026-01-02 03:06:00.000000", "hv-host", json.dumps({"rss_mib": 100.5})]]
                )
            ),
            "dialogs": list(self.comm.send_dialog_messages([dialog])),
        }

    # --- credential managers, cacher, job statistics, event service ------------------------------

    def creds(self, role: str, cert: str, public: str, private: str, client: str) -> dict[str, Any]:
        proxy, proxy_message = self.comm.get_proxy(role, (cert, cert))
        pair, pair_error = self.comm.get_key_pair(public, private)
        token_key, token_message = self.comm.get_token_key(client)
        return {
            "proxy": [proxy, proxy_message],
            "key_pair": [pair, pair_error],
            "token_key": [token_key, token_message],
        }

    def upload_checkpoint(self, base_url: str, task_id: int, sub_id: str, text: str) -> Any:
        """What the propagator does with an HPO job's checkpoint output file (lfn ``<task>_<sub>``)."""
        path = self.work_dir / f"checkpoint-{sub_id}"
        path.write_text(text)
        return self.comm.upload_checkpoint(base_url, task_id, 1, f"{task_id}_{sub_id}", str(path))

    def clear_checkpoint(self, base_url: str, task_id: int, sub_id: str) -> Any:
        """What the event updater does once iDDS has a point's loss."""
        return list(self.comm.clear_checkpoint(base_url, task_id, sub_id))

    def resource_types(self) -> Any:
        return list(self.comm.get_resource_types())

    def job_stats(self) -> dict[str, Any]:
        return {"stats": list(self.comm.get_job_stats()), "stats_new": list(self.comm.get_job_stats_new())}

    def events(
        self, site: str, panda_id: int, n_ranges: int = 2, task_id: int = 1, jobset_id: int = 1
    ) -> dict[str, Any]:
        """What the job fetcher and the event feeder do: availability, then ranges in chunks."""
        spec = self._job_spec(panda_id, site, "running")
        spec.jobsetID = spec.jobsetID or jobset_id
        return {
            "availability": list(self.comm.check_event_availability(spec)),
            "ranges": list(
                self.comm.get_event_ranges(
                    {panda_id: {"nRanges": n_ranges, "taskID": task_id, "jobsetID": jobset_id}}, False, ""
                )
            ),
        }

    def report_events(
        self, site: str, panda_id: int, statuses: dict[str, str], zip_lfn: str | None = None
    ) -> dict[str, Any]:
        """What the propagator does for a job whose ranges ended: its events (zipped to an object
        store when ``zip_lfn``) go with the job's heartbeat through ``update_jobs``."""
        from pandaharvester.harvestercore.event_spec import EventSpec
        from pandaharvester.harvestercore.file_spec import FileSpec

        spec = self._job_spec(panda_id, site, "running")
        zip_spec = None
        if zip_lfn:
            zip_spec = FileSpec()
            zip_spec.fileID = 1
            zip_spec.lfn = zip_lfn
            zip_spec.status = "finished"
            zip_spec.objstoreID = 1234
            zip_spec.pathConvention = 1000
            zip_spec.fsize = 4096
            zip_spec.chksum = "ad:0badcafe"
        for range_id, status in statuses.items():
            event = EventSpec()
            event.eventRangeID = range_id
            event.eventStatus = status
            event.subStatus = status if status in ("finished", "failed") else "running"
            event.PandaID = panda_id
            spec.add_event(event, zip_spec)
        results = self.comm.update_jobs([spec], "hv-propagator")
        return {"jobs": results, "subStatus": {e.eventRangeID: e.subStatus for e in spec.events}}


def main() -> None:
    driver = Driver()
    print("READY", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            result: Any = getattr(driver, request["step"])(**request.get("args", {}))
        except Exception as exc:  # reported to the test, which fails with it
            import traceback

            result = {"driver_error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print("RESULT:" + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
