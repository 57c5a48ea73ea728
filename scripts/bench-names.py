#!/usr/bin/env python3
"""Cost of workload names under container churn (issue: workloads by name).

    sudo python3 scripts/bench-names.py [--containers 1000] [--rate 10] [--lifetime 10] [--rounds 2]

Creates `--containers` real cgroups named as Docker's cgroupfs driver names
them (`/docker/<64 hex>`, in the hierarchy that accounts CPU time here:
v1 cpuacct on a hybrid machine, else v2), `--rate` a second, each removed
`--lifetime` s after its creation, while the release agent runs
`--plugins cgroups,csv` (CSV on /dev/shm). A stand-in for Docker's API
answers `GET /containers/<id>/json` on a Unix socket and counts the
requests. Each round runs the same churn twice, names off then on
(`plugins.cgroups.names.enabled`), and prints the agent's CPU (utime +
stime over the run, % of one core), its RSS after 10 s and at the end, and
the lookups made (requests, distinct ids). Target: names on cost at most
+0.3 % of a core over names off, one lookup per container, RSS flat.
Needs root (cgroups). AGENT=path uses that binary instead of building one.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn


class UnixHTTPServer(ThreadingMixIn, HTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self):
        self.socket.bind(self.server_address)

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.ids = set()


COUNTS = Counts()


class FakeDocker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        parts = self.path.split("/")
        # /containers/<id>/json
        if len(parts) == 4 and parts[1] == "containers" and parts[3] == "json":
            cid = parts[2]
            with COUNTS.lock:
                COUNTS.requests += 1
                COUNTS.ids.add(cid)
            body = json.dumps(
                {"Id": cid, "Name": "/bench-" + cid[:12], "Config": {"Image": "bench:1", "Labels": {"app": "bench"}}}
            ).encode()
            self.send_response(200)
        else:
            body = b"{}"
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def cpu_hierarchy():
    """The mount the agent reads CPU time from for new top-level cgroups."""
    root = "/sys/fs/cgroup"
    for v1 in ("cpuacct", "cpu,cpuacct"):
        if os.path.exists(os.path.join(root, v1, "cpuacct.usage")):
            return os.path.join(root, v1)
    return root


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_once(agent, work, sock, names_on, args):
    parent = os.path.join(cpu_hierarchy(), "docker")
    os.makedirs(parent, exist_ok=True)
    with COUNTS.lock:
        COUNTS.requests = 0
        COUNTS.ids = set()
    csv = os.path.join(work, "out.csv")
    cmd = [
        agent, "--config", os.path.join(work, "alumet-config.toml"),
        "--plugins", "cgroups,csv", "--output-file", csv,
        "--set", f"plugins.cgroups.names.enabled={'true' if names_on else 'false'}",
        "--set", f"plugins.cgroups.names.docker_socket=\"{sock}\"",
        "--set", "plugins.cgroups.names.slurm=false",
        "--set", "plugins.cgroups.include=[\"/docker/*\"]",
        "run",
    ]
    agent_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    time.sleep(2)  # past the start and the first second (inotify)
    cpu0, t0 = proc_cpu_s(agent_proc.pid), time.monotonic()
    live = []  # (removal time, dir)
    created = 0
    rss_10s = None
    period = 1.0 / args.rate
    next_at = time.monotonic()
    while created < args.containers or live:
        now = time.monotonic()
        while live and live[0][0] <= now:
            _, d = live.pop(0)
            os.rmdir(d)
        if created < args.containers and now >= next_at:
            d = os.path.join(parent, secrets.token_hex(32))
            os.mkdir(d)
            live.append((now + args.lifetime, d))
            created += 1
            next_at += period
        if rss_10s is None and now - t0 >= 10:
            rss_10s = rss_kib(agent_proc.pid)
        time.sleep(0.005)
    time.sleep(2)  # the last removals seen
    cpu1, t1 = proc_cpu_s(agent_proc.pid), time.monotonic()
    rss_end = rss_kib(agent_proc.pid)
    agent_proc.terminate()
    agent_proc.wait(timeout=30)
    with COUNTS.lock:
        requests, ids = COUNTS.requests, len(COUNTS.ids)
    return 100.0 * (cpu1 - cpu0) / (t1 - t0), rss_10s, rss_end, requests, ids


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--containers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--lifetime", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-names: needs root (it creates cgroups)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    agent = os.environ.get("AGENT")
    agent = os.path.abspath(agent) if agent else None
    if not agent:
        subprocess.run(["cargo", "build", "--release", "-p", "app-agent"], cwd=repo, check=True)
        agent = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target")), "release", "alumet-agent")
    work = tempfile.mkdtemp(prefix="alumet-names.", dir="/dev/shm")
    sock = os.path.join(work, "docker.sock")
    server = UnixHTTPServer(sock, FakeDocker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"{args.containers} containers at {args.rate}/s, {args.lifetime} s each; agent {agent}")
    print("round  names  cpu_%   rss_10s_KiB  rss_end_KiB  lookups  distinct_ids")
    results = {False: [], True: []}
    try:
        for r in range(args.rounds):
            for names_on in (False, True):
                cpu, rss10, rss_end, requests, ids = run_once(agent, work, sock, names_on, args)
                results[names_on].append(cpu)
                print(f"{r + 1:5}  {'on ' if names_on else 'off'}  {cpu:6.3f}  {rss10:11}  {rss_end:11}  {requests:7}  {ids:12}", flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    off = sum(results[False]) / len(results[False])
    on = sum(results[True]) / len(results[True])
    print(f"mean: names off {off:.3f} %, on {on:.3f} %, difference {on - off:+.3f} % of a core")


if __name__ == "__main__":
    main()
