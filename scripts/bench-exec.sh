#!/usr/bin/env bash
# The cost of `alumet-agent exec` around a command that does nothing:
# `exec -- true` against `true`, with the default configuration, with the
# command in its cgroup and without (agent.exec_in_cgroup = false).
#
#   scripts/bench-exec.sh [PROCESSES] [RUNS]
#
# The agent polls every process of the machine at the start and at the end,
# so its cost grows with their number: as root the benchmark runs in a PID
# namespace of its own (a /proc of its own) holding PROCESSES sleeping
# processes (default 100, a quiet server), so that the figure does not
# depend on what else runs here; without root it runs on the host as it is.
# Needs hyperfine (apt install hyperfine). AGENT=path reuses a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
processes="${1:-100}"
runs="${2:-200}"
agent="${AGENT:-}"
if [ -z "$agent" ]; then
    cargo build --release -p app-agent --bin alumet-agent >&2
    agent="$PWD/target/release/alumet-agent"
fi
command -v hyperfine >/dev/null || { echo "hyperfine is needed: apt install hyperfine" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

inner="$work/inner.sh"
cat >"$inner" <<EOF
#!/usr/bin/env bash
set -euo pipefail
cd "$work"
for _ in \$(seq "$processes"); do sleep 1000000 & done
sleep 0.5
echo "processes visible: \$(ls -d /proc/[0-9]* | wc -l); load average: \$(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N -w 10 -r "$runs" --export-json "$work/runs.json" \
    'true' \
    '$agent -q exec -- true' \
    '$agent -q --set agent.exec_in_cgroup=false exec -- true' >/dev/null
kill \$(jobs -p) 2>/dev/null || true
EOF
chmod +x "$inner"
if [ "$(id -u)" = 0 ] && unshare --pid --fork --mount-proc true 2>/dev/null; then
    unshare --pid --fork --mount-proc "$inner"
else
    echo "(not root: on the host as it is, with its own processes)"
    "$inner"
fi
python3 - "$work/runs.json" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[0]["median"]
print(f"{'command':<58} {'mean':>8} {'median':>8} {'min':>8} {'over true (median)':>20}")
for r in results:
    name = r["command"].split("/")[-1] if "/" in r["command"] else r["command"]
    print(f"{name:<58} {r['mean']*1e3:7.1f}ms {r['median']*1e3:7.1f}ms {r['min']*1e3:7.1f}ms"
          f" {(r['median'] - base)*1e3:+18.1f}ms")
EOF
