#!/bin/sh
# Every measurement in benchmarks/README.md, one after the other, each bounded (21 minutes on a
# quiet machine in the last pass, of which 10 are the soak; up to 15 minutes a step on a loaded
# one). Results go to benchmarks/results/<name>.json with the load average before each step in
# benchmarks/results/uptime.log. Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)
# and haproxy for the scale-out step.
#
#   benchmarks/run_all.sh            # everything
#   benchmarks/run_all.sh dispatch   # only the steps whose name contains "dispatch"
#   benchmarks/run_all.sh --peer     # also pandawms against the real PanDA server (opt-in: it
#                                    # installs panda-server from PyPI and Debian's Apache once,
#                                    # 16 minutes more on a quiet machine once installed,
#                                    # ~25 the first time; benchmarks/peer/run.sh)
#   benchmarks/run_all.sh --peer peer  # only that comparison
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"
peer=
if [ "${1:-}" = "--peer" ]; then
    peer=1
    shift
fi
only=${1:-}

step() {
    name=$1
    shift
    case "$name" in *"$only"*) ;; *) return 0 ;; esac
    echo "== $name: $(date -u +%H:%M:%S) $(uptime | sed 's/.*load average/load average/')" | tee -a "$OUT/uptime.log"
    timeout 900 "$PY" -m "$@" --json-out "$OUT/$name.json" > "$OUT/$name.txt" 2>&1 || echo "   $name failed (see $OUT/$name.txt)" | tee -a "$OUT/uptime.log"
    tail -n 12 "$OUT/$name.txt"
}


step dispatch-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario dispatch --jobs 30000 --pilots 200 --duration 180
step dispatch-pg-rate2000 benchmarks.pandabench --start-server postgresql --workers 2 --scenario dispatch --jobs 40000 --pilots 200 --rate 2000 --duration 180
step dispatch-pg-rate1000 benchmarks.pandabench --start-server postgresql --workers 2 --scenario dispatch --jobs 20000 --pilots 200 --rate 1000 --duration 180
step heartbeat-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario heartbeat --jobs 10000 --pilots 200 --measure 30 --duration 180
step lifecycle-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario lifecycle --heartbeats 0 --jobs 20000 --pilots 200 --duration 90
step soak-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario soak --heartbeats 0 --pilots 100 --duration 600 --rss-series
step dispatch-v1-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario dispatch --api v1 --jobs 30000 --pilots 200 --duration 180
step heartbeat-v1-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario heartbeat --api v1 --jobs 10000 --pilots 200 --measure 30 --duration 180
step lifecycle-v1-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario lifecycle --api v1 --heartbeats 0 --jobs 20000 --pilots 200 --duration 90
step harvester-pg benchmarks.pandabench --start-server postgresql --workers 2 --scenario harvester --heartbeats 0 --jobs 20000 --pilots 20 --duration 90
step dispatch-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario dispatch --jobs 30000 --pilots 200 --duration 180
step heartbeat-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario heartbeat --jobs 10000 --pilots 200 --measure 30 --duration 180
step lifecycle-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario lifecycle --heartbeats 0 --jobs 20000 --pilots 200 --duration 90
step dispatch-v1-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario dispatch --api v1 --jobs 30000 --pilots 200 --duration 180
step heartbeat-v1-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario heartbeat --api v1 --jobs 10000 --pilots 200 --measure 30 --duration 180
step harvester-sqlite benchmarks.pandabench --start-server sqlite --workers 2 --scenario harvester --heartbeats 0 --jobs 20000 --pilots 20 --duration 90
step scaleout-pg benchmarks.scaleout --jobs 3000 --pilots 60 --freeze 1 --duration 240
step growth-pg benchmarks.growth --db postgresql --live 10000,100000,1000000 --archive 10000000 --samples 500
step growth-sqlite benchmarks.growth --db sqlite --live 10000,100000,1000000 --archive 1000000 --samples 500

# pandawms and the real PanDA server side by side: never in CI, only with --peer.
if [ -n "$peer" ]; then
    case peer in *"$only"*)
        echo "== peer: $(date -u +%H:%M:%S) $(uptime | sed 's/.*load average/load average/')" | tee -a "$OUT/uptime.log"
        PY=$PY timeout 5400 benchmarks/peer/run.sh --runs 3 --pilots 100 --jobs 4000 --measure 30 --name peer \
            > "$OUT/peer.out" 2>&1 || echo "   peer failed (see $OUT/peer.out and $OUT/peer.log)" | tee -a "$OUT/uptime.log"
        tail -n 14 "$OUT/peer.out"
        ;;
    esac
fi
