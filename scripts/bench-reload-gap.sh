#!/bin/sh
# The gap a SIGHUP reload leaves between the old pipeline's last poll and the
# new one's first: procfs (system source every 100 ms) + csv, 10 reloads
# 0.7 s apart. Usage: scripts/bench-reload-gap.sh [path/to/alumet-agent]
set -eu
agent=$(realpath "${1:-target/release/alumet-agent}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/c.toml" <<'TOML'
[plugins.procfs]
enabled = true
system_poll_interval = "100ms"
process_poll_interval = "1s"
flush_interval = "100ms"
[plugins.csv]
enabled = true
output_path = "out.csv"
timestamp_format = "unix_ns"
flush_interval = "100ms"
TOML
cd "$dir"
"$agent" -q --config c.toml --plugins procfs,csv --control-socket "$dir/ctl.sock" run &
pid=$!
sleep 1
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -HUP "$pid"; sleep 0.7; done
kill -TERM "$pid"
wait "$pid"
python3 - <<'PY'
import csv
t = sorted({int(r[0]) for r in csv.reader(open("out.csv")) if r[1] == "tasks_running"})
gaps = [(b - a) / 1e6 for a, b in zip(t, t[1:])]
reload = sorted(g for g in gaps if g < 50)
print(f"{len(t)} polls, longest gap {max(gaps):.1f} ms (interval 100 ms)")
print("gaps at the reloads (ms):", " ".join(f"{g:.1f}" for g in reload))
PY
