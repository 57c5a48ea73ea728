#!/bin/sh
# The gaps a SIGHUP reload leaves in the polls of procfs's system source
# (every 100 ms) + csv, 10 reloads 0.7 s apart. What changes at each reload:
#   same    nothing (logrotate's SIGHUP): nothing restarts, outputs reopen;
#   procfs  procfs's section (its flush_interval): procfs alone restarts;
#   agent   [agent] output_queue_capacity: the whole pipeline restarts.
# Usage: scripts/bench-reload-gap.sh [path/to/alumet-agent] [same|procfs|agent]
set -eu
agent=$(realpath "${1:-target/release/alumet-agent}")
change=${2:-same}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
write_config() { # $1: procfs flush interval, $2: output queue capacity
cat > "$dir/c.toml" <<TOML
[agent]
output_queue_capacity = $2
[plugins.procfs]
enabled = true
system_poll_interval = "100ms"
process_poll_interval = "1s"
flush_interval = "$1"
[plugins.csv]
enabled = true
output_path = "out.csv"
timestamp_format = "unix_ns"
flush_interval = "100ms"
TOML
}
write_config 100ms 1024
cd "$dir"
"$agent" -q --config c.toml --plugins procfs,csv --control-socket "$dir/ctl.sock" run &
pid=$!
sleep 1
for i in 1 2 3 4 5 6 7 8 9 10; do
  odd=$((i % 2))
  case "$change" in
    procfs) if [ $odd = 1 ]; then write_config 99ms 1024; else write_config 100ms 1024; fi ;;
    agent) if [ $odd = 1 ]; then write_config 100ms 1023; else write_config 100ms 1024; fi ;;
  esac
  kill -HUP "$pid"; sleep 0.7
done
kill -TERM "$pid"
wait "$pid"
python3 - <<'PY'
import csv
t = sorted({int(r[0]) for r in csv.reader(open("out.csv")) if r[1] == "tasks_running"})
gaps = [(b - a) / 1e6 for a, b in zip(t, t[1:])]
# A restarted source polls at once: the gaps well off the 100 ms ticks.
off = sorted(g for g in gaps if not 60 <= g <= 140)
print(f"{len(t)} polls, gaps {min(gaps):.1f}..{max(gaps):.1f} ms (interval 100 ms)")
print(f"{len(off)} gaps off the ticks (ms):", " ".join(f"{g:.1f}" for g in off))
PY
