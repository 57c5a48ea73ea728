#!/usr/bin/env bash
# Cost of alumet-agent (procfs + csv, default intervals) on a busy node.
#
#   scripts/bench-node-scale.sh [extra_processes] [churn_per_s] [seconds] [agent args...]
#   (defaults: 3000 50 60)
#
# Starts `extra_processes` sleeping processes and, every second,
# `churn_per_s` short ones (`sleep 1`, so as many end each second), then runs
# the release agent with `--plugins procfs,csv` (more args, e.g.
# `--plugins procfs,csv,cgroups --set ...`, replace nothing but are appended)
# for `seconds`. Prints CPU in % of one core (utime + stime over wall time,
# from 2 s after start), peak RSS (VmHWM), RSS after 1 s, 1 and 10 minutes
# (when the run is that long), polls/s of the process source (distinct
# timestamps of process_memory_resident rows) and CSV rows/s, with the load
# average at start and end: figures taken with a load above 1 are *busy*.
# The CSV goes to /dev/shm (tmpfs) so that the disk is not the bottleneck.
# Environment: AGENT=path (an agent binary to use instead of building one),
# PERF_OUT=file (also record a profile, `perf record -e cpu-clock -g`, over
# the first 20 s of the measured part; `perf report -i file` reads it).
# Targets (issue 17): 3000 processes, 50/s churn: <= 1.5 % CPU, <= 16 MiB
# peak RSS, flat after the first minute.
set -euo pipefail

EXTRA=${1:-3000}
CHURN=${2:-50}
DURATION=${3:-60}
shift $(($# < 3 ? $# : 3))
WARMUP_S=2

cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ -z "${AGENT:-}" ]; then
    echo "building the release agent (target dir: $TARGET_DIR)..." >&2
    cargo build --release -p app-agent >&2
    AGENT=$TARGET_DIR/release/alumet-agent
fi

WORK=$(mktemp -d /dev/shm/alumet-node.XXXXXX)
SLEEPERS=()
CHURNER=
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    [ -n "$CHURNER" ] && kill "$CHURNER" 2>/dev/null || true
    for p in "${SLEEPERS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)

cpu_ticks() {
    local rest
    rest=$(sed 's/.*) //' "/proc/$1/stat")
    awk '{ print $12 + $13 }' <<<"$rest"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
now_ns() { date +%s%N; }
load1() { cut -d' ' -f1 /proc/loadavg; }

echo "starting $EXTRA sleeping processes..." >&2
for _ in $(seq "$EXTRA"); do
    sleep 100000 &
    SLEEPERS+=("$!")
done
if [ "$CHURN" -gt 0 ]; then
    (
        while :; do
            for _ in $(seq "$CHURN"); do sleep 1 & done
            sleep 1
            wait
        done
    ) &
    CHURNER=$!
fi
sleep 1

csv="$WORK/out.csv"
load_start=$(load1)
"$AGENT" --config "$WORK/agent.toml" --plugins procfs,csv --output-file "$csv" \
    --set 'plugins.csv.timestamp_format="unix_ns"' "$@" -q run &
pid=$!
sleep 1
rss_1s=$(rss_kb "$pid")
sleep $((WARMUP_S - 1))
t0=$(now_ns); c0=$(cpu_ticks "$pid")
if [ -n "${PERF_OUT:-}" ]; then
    perf record -q -e cpu-clock -g -o "$PERF_OUT" -p "$pid" -- sleep 20 >/dev/null 2>&1 &
fi
rss_1m=-; rss_10m=-
elapsed=$WARMUP_S
while [ "$elapsed" -lt $((DURATION + WARMUP_S)) ]; do
    sleep 1
    elapsed=$((elapsed + 1))
    [ "$elapsed" -eq 60 ] && rss_1m=$(rss_kb "$pid")
    [ "$elapsed" -eq 600 ] && rss_10m=$(rss_kb "$pid")
done
t1=$(now_ns); c1=$(cpu_ticks "$pid")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
rss_end=$(rss_kb "$pid")
pids=(/proc/[0-9]*)
procs=${#pids[@]}
load_end=$(load1)
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
awk -F, -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$HZ" -v hwm="$hwm" \
    -v rc="$rc" -v procs="$procs" -v r1s="$rss_1s" -v r1m="$rss_1m" -v r10m="$rss_10m" \
    -v rend="$rss_end" -v l0="$load_start" -v l1="$load_end" -v extra="$EXTRA" -v churn="$CHURN" '
    function mib(kb) { return kb == "-" ? "-" : sprintf("%.2f", kb / 1024) }
    NR > 1 && $1 >= t0 && $1 <= t1 {
        rows++
        if ($2 == "process_memory_resident") proc[$1] = 1
    }
    END {
        wall = (t1 - t0) / 1e9
        np = 0; for (k in proc) np++
        printf "node scale: %d extra processes, churn %d/s; exit %d, %d processes on the machine; load %s -> %s%s\n", extra, churn, rc, procs, l0, l1, (l0 > 1 || l1 > 1) ? " (busy)" : ""
        printf "  CPU:        %.3f %% of one core (%d ticks in %.1f s)\n", (c1 - c0) / hz / wall * 100, c1 - c0, wall
        printf "  peak RSS:   %.2f MiB\n", hwm / 1024
        printf "  RSS:        after 1 s %s MiB, 1 min %s MiB, 10 min %s MiB, end %s MiB\n", mib(r1s), mib(r1m), mib(r10m), mib(rend)
        printf "  polls/s:    processes %.2f\n", np / wall
        printf "  CSV rows/s: %.0f\n", rows / wall
    }' "$csv"
