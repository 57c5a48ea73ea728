#!/usr/bin/env python3
"""An OTLP/HTTP metrics receiver for the tests, on 127.0.0.1.

It decodes every request with the reference OpenTelemetry protobuf
definitions (PyPI package `opentelemetry-proto`, installed by
scripts/install-test-servers.sh) and appends one JSON line per request to
--out: request number, the status it answered, headers, and every data
point (metric, unit, type, temporality, value type and value, times,
attributes, resource attributes). It answers from --script, one entry per
request (then 200):

    200 | 400 | 500 | 429:SECONDS | 503:SECONDS | partial:N | drop | echo:STATUS

`drop` closes the connection without an answer; `echo:STATUS` answers
STATUS with the request's headers in the body (a careless server); `partial:N` answers 200
with partial_success.rejected_data_points = N. With --cert/--key it serves
HTTPS; with --client-ca it also requires a client certificate signed by it.
The port it listens on is written to --port-file once it accepts. With
--count-only (for the delivery benchmark) it still decodes every request
but records only the number of data points.
"""

import argparse
import gzip
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as service

TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def points_of(request):
    out = []
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind not in ("gauge", "sum"):
                    raise ValueError(f"unexpected metric data {kind}")
                data = getattr(m, kind)
                for p in data.data_points:
                    value_type = p.WhichOneof("value")
                    out.append(
                        {
                            "metric": m.name,
                            "unit": m.unit,
                            "description": m.description,
                            "type": kind,
                            "temporality": TEMPORALITY.get(data.aggregation_temporality)
                            if kind == "sum"
                            else None,
                            "monotonic": data.is_monotonic if kind == "sum" else None,
                            "value_type": value_type,
                            "value": getattr(p, value_type) if value_type else None,
                            "time": p.time_unix_nano,
                            "start": p.start_time_unix_nano,
                            "attributes": attributes(p.attributes),
                            "resource": resource,
                            "scope": sm.scope.name,
                        }
                    )
    return out


class State:
    def __init__(self, args):
        self.script = [s for s in args.script.split(",") if s]
        self.lock = threading.Lock()
        self.count = 0
        self.out = open(args.out, "a", buffering=1)

    def next_answer(self):
        with self.lock:
            n = self.count
            self.count += 1
        return n, (self.script[n] if n < len(self.script) else "200")

    def record(self, line):
        with self.lock:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        state = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        n, answer = state.next_answer()
        if answer == "drop":
            state.record({"n": n, "status": 0, "points": []})
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        content_type = self.headers.get("Content-Type", "")
        is_json = content_type.startswith("application/json")
        try:
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            request = service.ExportMetricsServiceRequest()
            if is_json:
                json_format.Parse(body.decode("utf-8"), request)
            else:
                request.ParseFromString(body)
            if self.server.count_only:
                count = sum(
                    len(getattr(m, m.WhichOneof("data")).data_points)
                    for rm in request.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                )
                state.record({"n": n, "status": 200, "count": count})
                self.reply(200, b"", "application/x-protobuf")
                return
            points = points_of(request)
        except Exception as e:  # a listener survives any request
            state.record({"n": n, "status": 400, "error": str(e), "points": []})
            self.reply(400, f"cannot decode: {e}".encode())
            return
        if answer.startswith("echo:"):
            status = int(answer.split(":", 1)[1])
            state.record({"n": n, "status": status, "points": []})
            echoed = " ".join(f"{k}: {v}" for k, v in self.headers.items())
            self.reply(status, f"refused, you sent {echoed}".encode())
            return
        status, extra = answer, None
        if ":" in answer:
            status, extra = answer.split(":", 1)
        status = 200 if status == "partial" else int(status)
        state.record(
            {
                "n": n,
                "status": status,
                "answer": answer,
                "at": time.time(),
                "path": self.path,
                "content_type": content_type,
                "gzip": self.headers.get("Content-Encoding") == "gzip",
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "points": points,
            }
        )
        if status == 200:
            response = service.ExportMetricsServiceResponse()
            if answer.startswith("partial:"):
                response.partial_success.rejected_data_points = int(extra)
                response.partial_success.error_message = "points refused by the test"
            if is_json:
                self.reply(200, json_format.MessageToJson(response).encode(), "application/json")
            else:
                self.reply(200, response.SerializeToString(), "application/x-protobuf")
        elif extra is not None:
            self.reply(status, b"slow down", headers=[("Retry-After", extra)])
        else:
            self.reply(status, f"refused by the test script ({status})".encode())


class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--script", default="")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    parser.add_argument("--count-only", action="store_true")
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.count_only = args.count_only
    server.state = State(args)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
