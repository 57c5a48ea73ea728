#!/usr/bin/env bash
# Memory and disk of alumet-agent while its network output's server is down.
#
#   scripts/bench-outage.sh [extra_processes] [seconds] [buffer_dir|-] [agent args...]
#   (defaults: 3000 180 -)
#
# Starts `extra_processes` sleeping processes, then runs the release agent
# with procfs (default intervals) and influxdb writing to a closed port of
# 127.0.0.1 (every request fails: an outage from the first second), with
# `buffer_dir` set when given (`-`: memory only). Prints, every 10 s, the
# agent's RSS and the bytes in buffer_dir; at the end its peak RSS and the
# influxdb summary (points delivered, dropped because the buffer was full,
# kept on disk for the next start): how long an outage the settings hold,
# and at what memory and disk cost.
# Environment: AGENT=path (a binary to use instead of building one).
set -euo pipefail

EXTRA=${1:-3000}
DURATION=${2:-180}
BUFFER_DIR=${3:--}
shift $(($# < 3 ? $# : 3))

cd "$(dirname "$0")/.."
if [ -z "${AGENT:-}" ]; then
    cargo build --release -p app-agent >&2
    AGENT=target/release/alumet-agent
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq "$EXTRA"); do
    sleep 100000 &
    PIDS+=($!)
done

# A port nothing listens on: bind, read its number, close it.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SETS=(--set "plugins.influxdb.url=\"http://127.0.0.1:$PORT\"")
if [ "$BUFFER_DIR" != "-" ]; then
    SETS+=(--set "plugins.influxdb.buffer_dir=\"$BUFFER_DIR\"")
fi
"$AGENT" --config "$WORK/alumet-config.toml" --plugins procfs,influxdb config regen >/dev/null 2>&1
"$AGENT" --config "$WORK/alumet-config.toml" --plugins procfs,influxdb "${SETS[@]}" "$@" run \
    2>"$WORK/agent.log" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

printf '%6s %10s %12s\n' "t (s)" "RSS (MiB)" "disk (MiB)"
for t in $(seq 10 10 "$DURATION"); do
    sleep 10
    rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
    disk=0
    if [ "$BUFFER_DIR" != "-" ] && [ -d "$BUFFER_DIR" ]; then
        disk=$(du -sk "$BUFFER_DIR" | cut -f1)
    fi
    printf '%6d %10.1f %12.1f\n' "$t" "$(echo "$rss_kb / 1024" | bc -l)" "$(echo "$disk / 1024" | bc -l)"
done
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || true
printf 'peak RSS: %.1f MiB\n' "$(echo "$hwm_kb / 1024" | bc -l)"
grep -E "influxdb: .*points delivered|kept in buffer_dir|buffer is full" "$WORK/agent.log" | tail -3
