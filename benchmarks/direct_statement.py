"""One heartbeat UPDATE ... RETURNING through SQLAlchemy and on the driver's cursor, in one process.

The figure behind :mod:`pandawms.db.direct`: the same prebuilt heartbeat statement of
``core/jobs/heartbeat.py`` run ``--rounds`` times on 1,000 running jobs of a scratch PostgreSQL
database, in one transaction, through ``Connection.execute`` and through
:class:`pandawms.db.direct.DirectStatement`, alternating three times; wall time per statement
(the round trip included, so the difference is the client's work).

    .venv/bin/python -m benchmarks.direct_statement
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from benchmarks.pgdb import scratch_database
from pandawms.config import load_settings
from pandawms.core.jobs import heartbeat
from pandawms.core.runtime import Runtime
from pandawms.db.direct import compile_direct
from pandawms.db.schema import jobs
from pandawms.db.versioning import init_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args(argv)
    with scratch_database(args.admin_url, "pandawms_bench_direct") as url:
        rt = Runtime.from_settings(load_settings(None, {"db_url": url}))
        try:
            init_schema(rt.engine)
            with rt.engine.begin() as conn:
                conn.execute(
                    jobs.insert(),
                    [{"PandaID": i, "jobStatus": "running", "attemptNr": 1} for i in range(1, 1001)],
                )
            stmt = heartbeat._heartbeat_statement(("coreCount", "cpuConsumptionTime"), True, "", "simple")
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

            def params(n: int) -> dict[str, Any]:
                return {
                    "hb_coreCount": 1,
                    "hb_cpuConsumptionTime": 12,
                    "hb_id": n % 1000 + 1,
                    "hb_attempt": 1,
                    "hb_now": now,
                }

            per_statement: dict[str, list[float]] = {"sqlalchemy": [], "driver cursor": []}
            with rt.engine.begin() as conn:
                direct = compile_direct(stmt, conn.dialect)
                assert direct is not None
                for _ in range(3):
                    for way in per_statement:
                        started = time.perf_counter()
                        for n in range(args.rounds):
                            if way == "sqlalchemy":
                                conn.execute(stmt, params(n)).mappings().first()
                            else:
                                direct.first(conn, params(n))
                        per_statement[way].append((time.perf_counter() - started) / args.rounds * 1e6)
        finally:
            rt.engine.dispose()
    print(json.dumps({way: [round(us, 1) for us in values] for way, values in per_statement.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
