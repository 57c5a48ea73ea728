#!/usr/bin/env bash
# Cost of alumet-agent (procfs + csv, default intervals) on a busy node.
#
#   scripts/bench-node-scale.sh [--energy] [--cgroups N] [extra_processes] [churn_per_s] [seconds] [agent args...]
#   (defaults: 3000 50 60)
#
# Starts `extra_processes` sleeping processes and, every second,
# `churn_per_s` short ones (`sleep 1`, so as many end each second), then runs
# the release agent with `--plugins procfs,csv` (more args, e.g.
# `--set ...`, replace nothing but are appended) for `seconds`.
#   --energy      also `rapl` (powercap interface) on a fixture powercap tree
#                 under the work dir, one package zone that a background loop
#                 advances in place every 100 ms (20 W), and
#                 `energy-attribution` (idle power 5 W for `package`, since
#                 the fixture has no idle history to learn it from).
#   --cgroups N   also `cgroups`, with N real cgroups created as
#                 /alumet-bench-PID.slice/svcI.service in the v2 hierarchy
#                 and, on a hybrid machine, in the v1 memory and blkio ones
#                 (as systemd's accounting does), each holding one sleeping
#                 process (taken from the extra processes, so the process
#                 count does not change); removed at the end. Needs root.
# Prints CPU in % of one core (utime + stime over wall time, from 2 s after
# start), peak RSS (VmHWM), RSS after 1 s, 1 and 10 minutes and at every minute (when the run is
# that long), polls/s of the process source (distinct timestamps of
# process_memory_resident rows), of rapl and of cgroups when enabled, the
# cgroups measured, and CSV rows/s, with the load average at start and end:
# figures taken with a load above 1 are *busy*.
# The CSV goes to /dev/shm (tmpfs) so that the disk is not the bottleneck.
# Environment: AGENT=path (an agent binary to use instead of building one),
# PERF_OUT=file (also record a profile, `perf record -e cpu-clock -g`, over
# the first 20 s of the measured part; `perf report -i file` reads it;
# PERF_CALL_GRAPH="--call-graph dwarf" for user-space call chains, which
# the release binary's missing frame pointers hide from `-g`).
# Targets (issue 17): 3000 processes, 50/s churn: <= 1.5 % CPU, <= 16 MiB
# peak RSS, flat after the first minute; with --energy <= 2 %; with
# --cgroups 1000 on top, <= 0.5 % more.
set -euo pipefail

ENERGY=0
CGROUPS=0
while [ $# -gt 0 ]; do
    case $1 in
    --energy) ENERGY=1; shift ;;
    --cgroups) CGROUPS=$2; shift 2 ;;
    *) break ;;
    esac
done
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
RAPL_LOOP=
CGROUP_DIRS=()
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    [ -n "$CHURNER" ] && kill "$CHURNER" 2>/dev/null || true
    [ -n "$RAPL_LOOP" ] && kill "$RAPL_LOOP" 2>/dev/null || true
    for p in "${SLEEPERS[@]}"; do kill "$p" 2>/dev/null || true; done
    # A cgroup can be removed once its sleeper has exited.
    for p in "${SLEEPERS[@]}"; do wait "$p" 2>/dev/null || true; done
    for d in "${CGROUP_DIRS[@]}"; do
        rmdir "$d"/svc*.service "$d" 2>/dev/null || true
    done
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
for _ in $(seq "$((EXTRA > CGROUPS ? EXTRA : CGROUPS))"); do
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

PLUGINS=procfs,csv
EXTRA_ARGS=()
if [ "$ENERGY" -eq 1 ]; then
    zone="$WORK/sys/class/powercap/intel-rapl:0"
    mkdir -p "$zone"
    echo package-0 >"$zone/name"
    echo 262143328850 >"$zone/max_energy_range_uj"
    echo 1000000 >"$zone/energy_uj"
    # 2 J every 100 ms, written in place (`1<>` neither truncates nor
    # replaces the file; the value only grows, so no stale digits remain).
    (
        e=1000000
        while :; do
            sleep 0.1
            e=$((e + 2000000))
            echo "$e" 1<>"$zone/energy_uj"
        done
    ) &
    RAPL_LOOP=$!
    PLUGINS=rapl,$PLUGINS,energy-attribution
    EXTRA_ARGS+=(--set "plugins.rapl.sysfs_root=\"$WORK/sys\""
        --set 'plugins.rapl.interface="powercap"'
        --set 'plugins.energy-attribution.idle_power_w={ package = 5.0 }')
fi
if [ "$CGROUPS" -gt 0 ]; then
    base=alumet-bench-$$.slice
    CGROUP_DIRS+=("/sys/fs/cgroup/unified/$base")
    for h in memory blkio; do
        [ -d "/sys/fs/cgroup/$h" ] && CGROUP_DIRS+=("/sys/fs/cgroup/$h/$base")
    done
    echo "creating $CGROUPS cgroups in ${#CGROUP_DIRS[@]} hierarchies..." >&2
    for d in "${CGROUP_DIRS[@]}"; do
        mkdir "$d"
        for i in $(seq 0 $((CGROUPS - 1))); do
            mkdir "$d/svc$i.service"
            echo "${SLEEPERS[$i]}" >"$d/svc$i.service/cgroup.procs"
        done
    done
    PLUGINS=cgroups,$PLUGINS
fi
sleep 1

csv="$WORK/out.csv"
load_start=$(load1)
"$AGENT" --config "$WORK/agent.toml" --plugins "$PLUGINS" --output-file "$csv" \
    --set 'plugins.csv.timestamp_format="unix_ns"' "${EXTRA_ARGS[@]}" "$@" -q run &
pid=$!
sleep 1
rss_1s=$(rss_kb "$pid")
sleep $((WARMUP_S - 1))
t0=$(now_ns); c0=$(cpu_ticks "$pid")
if [ -n "${PERF_OUT:-}" ]; then
    # shellcheck disable=SC2086 # PERF_CALL_GRAPH is a list of words
    perf record -q -e cpu-clock ${PERF_CALL_GRAPH:--g} -o "$PERF_OUT" -p "$pid" -- sleep 20 >/dev/null 2>&1 &
fi
rss_1m=-; rss_10m=-; rss_minutes=""
elapsed=$WARMUP_S
while [ "$elapsed" -lt $((DURATION + WARMUP_S)) ]; do
    sleep 1
    elapsed=$((elapsed + 1))
    [ "$elapsed" -eq 60 ] && rss_1m=$(rss_kb "$pid")
    [ "$elapsed" -eq 600 ] && rss_10m=$(rss_kb "$pid")
    # Every minute, to see whether the RSS is flat or still growing.
    [ $((elapsed % 60)) -eq 0 ] && rss_minutes="$rss_minutes $(awk -v kb="$(rss_kb "$pid")" 'BEGIN { printf "%.2f", kb / 1024 }')"
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
    -v rend="$rss_end" -v l0="$load_start" -v l1="$load_end" -v extra="$EXTRA" -v churn="$CHURN" \
    -v plugins="$PLUGINS" -v minutes="$rss_minutes" '
    function mib(kb) { return kb == "-" ? "-" : sprintf("%.2f", kb / 1024) }
    NR > 1 && $1 >= t0 && $1 <= t1 {
        rows++
        if ($2 == "process_memory_resident") proc[$1] = 1
        if ($2 == "rapl_consumed_energy") rapl[$1] = 1
        if ($2 == "attributed_energy") attributed++
        if ($2 == "cgroups_measured") { cg[$1] = 1; measured = $4 }
    }
    END {
        wall = (t1 - t0) / 1e9
        np = 0; for (k in proc) np++
        nr = 0; for (k in rapl) nr++
        nc = 0; for (k in cg) nc++
        printf "node scale (%s): %d extra processes, churn %d/s; exit %d, %d processes on the machine; load %s -> %s%s\n", plugins, extra, churn, rc, procs, l0, l1, (l0 > 1 || l1 > 1) ? " (busy)" : ""
        printf "  CPU:        %.3f %% of one core (%d ticks in %.1f s)\n", (c1 - c0) / hz / wall * 100, c1 - c0, wall
        printf "  peak RSS:   %.2f MiB\n", hwm / 1024
        printf "  RSS:        after 1 s %s MiB, 1 min %s MiB, 10 min %s MiB, end %s MiB\n", mib(r1s), mib(r1m), mib(r10m), mib(rend)
        if (minutes != "") printf "  RSS/minute:%s MiB\n", minutes
        # With thinned rows (the default) a poll shows only where the memory
        # of some process moved or aged: polls are counted with keep_zero.
        printf "  polls/s:    processes %.2f%s", np / wall, (np / wall < 0.9) ? " (rows thinned: a lower bound; pass --set plugins.procfs.keep_zero=true to count polls)" : ""
        if (plugins ~ /rapl/) printf ", rapl %.2f (%d attributed_energy rows/s)", nr / wall, attributed / wall
        if (plugins ~ /cgroups/) printf ", cgroups %.2f (%d cgroups measured)", nc / wall, measured
        printf "\n"
        printf "  CSV rows/s: %.0f\n", rows / wall
    }' "$csv"
