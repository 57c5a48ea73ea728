#!/usr/bin/env python3
"""What sushy-static lacks, in front of it, for plugin-redfish's tests.

sushy-static serves a mockup's files and nothing else: no SessionService
(its POST answers 204 without a token), no authentication, no faults. This
HTTPS front adds them, as a BMC does:

- POST /redfish/v1/SessionService/Sessions with {"UserName", "Password"}:
  201, X-Auth-Token and Location when they match, else 401;
- DELETE of a session's Location with its token: 204;
- GET /redfish/v1/ without credentials (the service root is public), any
  other GET only with a valid X-Auth-Token (or Basic credentials), else 401,
  then forwarded to sushy-static over HTTPS (trusting --ca);
- faults read at each request from --control (JSON, rewritten by the test):
  {"delay_s": 2.0} answers that late, {"status": 503} answers that status,
  {"generation": n} forgets every session when n changes (expired sessions);
- counts (logins, refused logins, deleted sessions, forwarded GETs)
  written to --stats (JSON) after each request.
"""
import argparse
import base64
import http.server
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid

SESSIONS = "/redfish/v1/SessionService/Sessions"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--stats", required=True)
    a = p.parse_args()

    lock = threading.Lock()
    state = {"tokens": {}, "generation": None}
    stats = {"logins": 0, "refused": 0, "deleted": 0, "gets": 0}
    upstream_tls = ssl.create_default_context(cafile=a.ca)

    def control():
        try:
            with open(a.control) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def save_stats():
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, a.stats)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def faults(self):
            c = control()
            with lock:
                if c.get("generation") != state["generation"]:
                    state["generation"] = c.get("generation")
                    state["tokens"].clear()
            if c.get("delay_s"):
                time.sleep(float(c["delay_s"]))
            if c.get("status"):
                self.answer(int(c["status"]))
                return True
            return False

        def authorized(self):
            token = self.headers.get("X-Auth-Token")
            with lock:
                if token and token in state["tokens"]:
                    return True
            basic = self.headers.get("Authorization", "")
            expected = base64.b64encode(f"{a.user}:{a.password}".encode()).decode()
            return basic == "Basic " + expected

        def do_POST(self):
            if self.faults():
                return
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            if self.path.rstrip("/") != SESSIONS:
                return self.answer(405)
            try:
                creds = json.loads(body)
            except ValueError:
                return self.answer(400)
            with lock:
                if creds.get("UserName") != a.user or creds.get("Password") != a.password:
                    stats["refused"] += 1
                    save_stats()
                    return self.answer(401)
                token = uuid.uuid4().hex
                sid = str(stats["logins"] + 1)
                state["tokens"][token] = sid
                stats["logins"] += 1
                save_stats()
            self.answer(201, b"{}", [("X-Auth-Token", token), ("Location", f"{SESSIONS}/{sid}")])

        def do_DELETE(self):
            if self.faults():
                return
            token = self.headers.get("X-Auth-Token")
            with lock:
                sid = state["tokens"].get(token)
                if sid is None or self.path.rstrip("/") != f"{SESSIONS}/{sid}":
                    return self.answer(401)
                del state["tokens"][token]
                stats["deleted"] += 1
                save_stats()
            self.answer(204)

        def do_GET(self):
            if self.faults():
                return
            if self.path.rstrip("/") != "/redfish/v1" and not self.authorized():
                return self.answer(401)
            try:
                with urllib.request.urlopen(a.upstream + self.path, context=upstream_tls, timeout=10) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
            with lock:
                stats["gets"] += 1
                save_stats()
            self.answer(status, body, [("Content-Type", "application/json")])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(a.cert, a.key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    save_stats()
    server.serve_forever()


if __name__ == "__main__":
    main()
