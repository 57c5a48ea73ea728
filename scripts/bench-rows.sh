#!/usr/bin/env bash
# CSV rows and bytes per hour with the default config, thinned (the default,
# `keep_zero = false`) and with every point (`keep_zero = true` for procfs
# and cgroups), on this machine.
#
#   scripts/bench-rows.sh [seconds]      (default 120)
#
# Runs the release agent (AGENT=path to use another binary) on its embedded
# default config twice, one after the other, each for `seconds`, writing the
# CSV to /dev/shm; prints rows, bytes and the share of rows whose value is 0
# for each, scaled to an hour, the ratio, and the per-series CPU-time totals
# of both runs side by side (process_cpu_time summed over every process,
# cgroup_cpu_time over every cgroup: they differ only by what the machine
# did in each run, not by the thinning, which the tests check exactly).
set -euo pipefail

SECONDS_RUN=${1:-120}
cd "$(dirname "$0")/.."
if [ -z "${AGENT:-}" ]; then
    echo "building the release agent..." >&2
    cargo build --release -p app-agent >&2
    AGENT=${CARGO_TARGET_DIR:-target}/release/alumet-agent
fi
WORK=$(mktemp -d /dev/shm/alumet-rows.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

run() {
    local name=$1
    shift
    "$AGENT" --set "plugins.csv.output_path=\"$WORK/$name.csv\"" "$@" run >"$WORK/$name.log" 2>&1 &
    local pid=$!
    sleep "$SECONDS_RUN"
    kill -TERM "$pid"
    wait "$pid" || true
}

summary() {
    local file=$1
    awk -F, -v secs="$SECONDS_RUN" '
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "value") v = i; if ($i == "metric") m = i }; next }
        { rows++; if ($v + 0 == 0) zeros++;
          if ($m == "process_cpu_time") pcpu += $v;
          if ($m == "cgroup_cpu_time") ccpu += $v }
        END { printf "%d rows (%.0f %% zero), %.0f rows/h, ", rows, 100 * zeros / rows, rows * 3600 / secs;
              printf "process_cpu_time total %.2f s, cgroup_cpu_time total %.2f s", pcpu, ccpu }' "$file"
    local bytes
    bytes=$(stat -c %s "$file")
    echo ", $bytes bytes, $((bytes * 3600 / SECONDS_RUN / 1024 / 1024)) MiB/h"
}

echo "agent: $AGENT, $SECONDS_RUN s each, $(ls /proc | grep -c '^[0-9]') processes, load $(cut -d' ' -f1-3 /proc/loadavg)"
run every --set plugins.procfs.keep_zero=true --set plugins.cgroups.keep_zero=true
run default
printf 'keep_zero = true: '
summary "$WORK/every.csv"
printf 'default:          '
summary "$WORK/default.csv"
every=$(($(wc -l <"$WORK/every.csv") - 1))
thin=$(($(wc -l <"$WORK/default.csv") - 1))
every_b=$(stat -c %s "$WORK/every.csv")
thin_b=$(stat -c %s "$WORK/default.csv")
awk -v a="$every" -v b="$thin" -v ab="$every_b" -v bb="$thin_b" \
    'BEGIN { printf "fewer: %.1fx rows, %.1fx bytes\n", a / b, ab / bb }'
