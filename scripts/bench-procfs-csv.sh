#!/usr/bin/env bash
# Cost of alumet-agent with procfs (system + every process) and csv, on this machine.
#
#   scripts/bench-procfs-csv.sh [seconds_at_1s] [seconds_at_10ms]    (defaults: 30 20)
#
# Builds the release agent, then runs it twice:
#   (a) default intervals (every poll 1 s, procfs flush 5 s, csv flush 1 s);
#   (b) every interval at 10 ms (procfs polls, process refresh and flush; csv flush).
# For each it prints, over the steady part of the run (from 2 s after start
# to the end): CPU in % of one core (utime + stime from /proc/PID/stat over
# wall time), peak RSS (VmHWM from /proc/PID/status, read just before SIGTERM),
# polls per second achieved by the system and the process sources (distinct
# timestamps of tasks_running / process_memory_resident rows in the CSV),
# CSV rows per second, and the number of processes on the machine.
# Targets (issue 4): (a) <= 0.3 % CPU, <= 8 MiB RSS; (b) 100 polls/s, <= 20 % CPU.
set -euo pipefail

SECONDS_1S=${1:-30}
SECONDS_10MS=${2:-20}
WARMUP_S=2

cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
echo "building the release agent (target dir: $TARGET_DIR)..." >&2
cargo build --release -p app-agent >&2
AGENT=$TARGET_DIR/release/alumet-agent

WORK=$(mktemp -d /tmp/alumet-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)

# utime + stime of a process, in ticks (fields 14 and 15, counted after the last ')').
cpu_ticks() {
    local rest
    rest=$(sed 's/.*) //' "/proc/$1/stat")
    awk '{ print $12 + $13 }' <<<"$rest"
}

now_ns() { date +%s%N; }

# run_case NAME SECONDS [--set KEY=VALUE]...
run_case() {
    local name=$1 duration=$2
    shift 2
    local csv="$WORK/$name.csv"
    "$AGENT" --config "$WORK/$name.toml" --plugins procfs,csv --output-file "$csv" \
        --set 'plugins.csv.timestamp_format="unix_ns"' "$@" -q run &
    local pid=$!
    sleep "$WARMUP_S"
    local t0 c0 t1 c1 hwm rc procs
    t0=$(now_ns); c0=$(cpu_ticks "$pid")
    sleep "$duration"
    t1=$(now_ns); c1=$(cpu_ticks "$pid")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
    procs=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
    kill -TERM "$pid"
    rc=0; wait "$pid" || rc=$?
    awk -F, -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$HZ" -v hwm="$hwm" \
        -v name="$name" -v rc="$rc" -v procs="$procs" '
        NR > 1 && $1 >= t0 && $1 <= t1 {
            rows++
            if ($2 == "tasks_running") sys[$1] = 1
            if ($2 == "process_memory_resident") proc[$1] = 1
        }
        END {
            wall = (t1 - t0) / 1e9
            ns = 0; for (k in sys) ns++
            np = 0; for (k in proc) np++
            printf "%-28s exit %d, %d processes on the machine\n", name, rc, procs
            printf "  CPU:        %.3f %% of one core (%d ticks in %.1f s)\n", (c1 - c0) / hz / wall * 100, c1 - c0, wall
            printf "  peak RSS:   %.2f MiB (VmHWM %d kB)\n", hwm / 1024, hwm
            printf "  polls/s:    system %.1f, processes %.1f\n", ns / wall, np / wall
            printf "  CSV rows/s: %.0f\n", rows / wall
        }' "$csv"
}

run_case "(a) default intervals (1s)" "$SECONDS_1S"
run_case "(b) every interval 10ms" "$SECONDS_10MS" \
    --set 'plugins.procfs.system_poll_interval="10ms"' \
    --set 'plugins.procfs.process_poll_interval="10ms"' \
    --set 'plugins.procfs.process_refresh_interval="10ms"' \
    --set 'plugins.procfs.flush_interval="10ms"' \
    --set 'plugins.csv.flush_interval="10ms"'
