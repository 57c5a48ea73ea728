#!/usr/bin/env python3
"""Slow-client reproduction of issue #30, against a running agent.

Prometheus endpoint: `--slow` clients each send the head of a GET one byte
every `--interval` seconds and reconnect as soon as the endpoint closes
them; meanwhile `--scrapes` ordinary scrapes (one connection each, whole
request at once) run one after the other. Prints how many got a 200 and
how long they took.

    python3 scripts/slowloris.py --target 127.0.0.1:8719 --slow 64 --interval 2

Control socket (`--ctl`): one client sends "status" and spaces, a byte
every 4 s, never a newline; half a second later `alumet-agent ctl status`
runs beside it. Prints how long each took and what they got.

    python3 scripts/slowloris.py --ctl /run/alumet/control.sock --agent target/debug/alumet-agent

Standard library only.
"""

import argparse
import select
import socket
import threading
import time

HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\nX-Padding: " + b"a" * 4000


def slow_client(addr, interval, stop, counters, lock, silent):
    while not stop.is_set():
        try:
            s = socket.create_connection(addr, timeout=5)
        except OSError:
            time.sleep(0.01)
            continue
        with lock:
            counters["connects"] += 1
        try:
            for i in range(len(HEAD)):
                if stop.is_set():
                    break
                if not silent:
                    s.send(HEAD[i : i + 1])
                # Wait for the next byte's time, or for the endpoint to close us.
                readable, _, _ = select.select([s], [], [], interval)
                if readable:
                    if not s.recv(4096):
                        break
        except OSError:
            pass
        finally:
            s.close()


def scrape(addr, timeout):
    started = time.monotonic()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return False, time.monotonic() - started, str(e)
    ok = data.startswith(b"HTTP/1.1 200")
    return ok, time.monotonic() - started, data[:40].decode(errors="replace") or "closed without an answer"


def control_socket(path, agent):
    import subprocess

    def trickle():
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        started = time.monotonic()
        got = b""
        for b in b"status" + b" " * 20:
            try:
                s.send(bytes([b]))
            except OSError as e:
                got = got or f"send failed: {e}".encode()
                break
            s.settimeout(4)
            try:
                data = s.recv(4096)
                if not data:
                    break
                got += data
            except socket.timeout:
                pass
            except OSError:
                # Closed after its answer, with a byte sent meanwhile still unread.
                break
        print(f"slow client: {time.monotonic() - started:.1f} s, got {got.decode(errors='replace').strip()!r}")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    r = subprocess.run([agent, "--control-socket", path, "ctl", "status"], capture_output=True, text=True)
    first = (r.stderr.strip() or r.stdout.splitlines()[0]) if (r.stderr or r.stdout) else ""
    print(f"ctl status beside it: exit {r.returncode} after {time.monotonic() - started:.1f} s: {first}")
    t.join(timeout=120)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ctl", help="control socket path: test it instead of the endpoint")
    p.add_argument("--agent", default="alumet-agent", help="the agent binary, for --ctl")
    p.add_argument("--target", default="127.0.0.1:8719")
    p.add_argument("--slow", type=int, default=64)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--silent", action="store_true", help="slow clients send nothing at all")
    p.add_argument("--scrapes", type=int, default=24)
    p.add_argument("--gap", type=float, default=0.5, help="seconds between two scrapes")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=5.0, help="per scrape")
    a = p.parse_args()
    if a.ctl:
        return control_socket(a.ctl, a.agent)
    host, port = a.target.rsplit(":", 1)
    addr = (host, int(port))
    stop = threading.Event()
    counters = {"connects": 0}
    lock = threading.Lock()
    threads = [
        threading.Thread(target=slow_client, args=(addr, a.interval, stop, counters, lock, a.silent), daemon=True)
        for _ in range(a.slow)
    ]
    for t in threads:
        t.start()
    time.sleep(a.warmup)
    results = []
    for _ in range(a.scrapes):
        results.append(scrape(addr, a.timeout))
        time.sleep(a.gap)
    stop.set()
    ok = [r for r in results if r[0]]
    times = sorted(r[1] for r in ok)
    pace = "silent" if a.silent else f"one byte every {a.interval} s"
    print(f"slow clients: {a.slow}, {pace}, {counters['connects']} connections made")
    print(f"scrapes answered 200: {len(ok)} of {len(results)}")
    if times:
        print(f"  latency: median {times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    failures = {}
    for r in results:
        if not r[0]:
            failures[r[2]] = failures.get(r[2], 0) + 1
    for why, n in failures.items():
        print(f"  failed x{n}: {why}")


if __name__ == "__main__":
    main()
