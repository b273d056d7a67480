#!/bin/bash
# pandawms and the real PanDA server side by side (see benchmarks/README.md, "The real server").
# Installs the real server once (setup.sh), then runs benchmarks/peer/compare.py with the given
# arguments; results in benchmarks/results/<--name, default peer>.{json,txt,log}.
#
#   benchmarks/peer/run.sh                                   # 3 runs, 100 pilots, 4,000 jobs
#   benchmarks/peer/run.sh --runs 1 --pilots 20 --jobs 400 --measure 10 --name peer-smoke
#   PANDA_DATABASE_SRC=/path/to/panda-database benchmarks/peer/run.sh   # schema repository offline
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication) and, the first time,
# root (Debian packages) and PyPI. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
bash benchmarks/peer/setup.sh >/dev/null
exec "$PY" -m benchmarks.peer.compare "$@"
