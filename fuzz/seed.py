#!/usr/bin/env python3
"""Gathers each fuzz target's seeds from the repository's fixtures into
fuzz/seeds/<target>/ (not committed), one file per distinct content, named by
its SHA-1 as libFuzzer names its finds. `cargo +nightly fuzz cmin` then
keeps, in fuzz/corpus/<target>/, the seeds that add coverage (FUZZING.md).

    python3 fuzz/seed.py [target...]
"""

import glob
import hashlib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def files(*patterns):
    """The contents of the files matching the patterns (relative to the root)."""
    out = []
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    out.append(f.read())
    return out


def files_abs(*paths):
    """The contents of files outside the repository that exist here."""
    out = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                out.append(f.read())
        except OSError:
            pass
    return out


def rust_strings(path, name_re=r"[A-Z_]+"):
    """The raw and plain string constants of a Rust file's tests (inputs
    written inline where no fixture file exists)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    out = [m.encode() for m in re.findall(r'r#"(.*?)"#', text, re.S)]
    for m in re.findall(r'const ' + name_re + r': &str = "(.*?)";', text, re.S):
        out.append(m.replace("\\\n", "").encode().decode("unicode_escape").encode())
    return out


def rust_paths(path):
    """The string literals of a Rust file that are absolute paths."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    return [m.encode() for m in re.findall(r'"(/[^"\\]*)"', text)]


def dirs_under(*roots):
    """Cgroup paths: the directories under fixture cgroup roots, as the
    plugin sees them (relative to the root, with a leading `/`)."""
    out = []
    for pattern in roots:
        for root in sorted(glob.glob(os.path.join(ROOT, pattern))):
            for here, subdirs, _ in os.walk(root):
                for d in subdirs:
                    rel = os.path.relpath(os.path.join(here, d), root)
                    out.append(("/" + rel).encode())
    return out


def kernel_seeds():
    return {
        "proc_stat": files(
            "plugin-procfs/tests/fixtures/*/proc*/stat",
            "plugin-procfs/tests/fixtures/*/proc*/meminfo",
            "plugin-procfs/tests/fixtures/*/proc*/net/dev",
            "plugin-procfs/tests/fixtures/*/proc*/uptime",
            "plugin-energy-attribution/tests/fixtures/**/stat",
        ),
        "proc_pid_stat": files(
            "plugin-procfs/tests/fixtures/*/proc*/*/stat",
            "plugin-procfs/tests/fixtures/*/proc*/*/schedstat",
        ),
        "mountinfo": rust_strings("kernelfs/src/cgroup/mountinfo.rs")
        + files("kernelfs/tests/**/mountinfo", "plugin-*/tests/fixtures/**/mountinfo")
        # A machine's own (whatever it mounts), and a pure v2 one.
        + files_abs("/proc/self/mountinfo")
        + [
            b"22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n"
            b"30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
        ],
        "proc_cgroup": files(
            "plugin-*/tests/fixtures/**/[0-9]*/cgroup",
        )
        + [
            b"0::/user.slice/user-1000.slice/session-3.scope\n",
            b"12:cpu,cpuacct:/docker/ab12\n4:memory:/docker/ab12\n3:blkio:/docker/ab12\n"
            b"1:name=systemd:/user.slice/a:b\n0::/docker/ab12\n",
        ],
        "cgroup_stat": files(
            "plugin-cgroups/tests/fixtures/**/cpu.stat",
            "plugin-cgroups/tests/fixtures/**/cpuacct.stat",
            "plugin-cgroups/tests/fixtures/**/io.stat",
            "plugin-cgroups/tests/fixtures/**/blkio.throttle.io_service_bytes*",
            "plugin-cgroups/tests/fixtures/**/memory.current",
            "plugin-cgroups/tests/fixtures/**/memory.peak",
            "plugin-cgroups/tests/fixtures/**/memory.*usage_in_bytes",
            "plugin-cgroups/tests/fixtures/**/cpuacct.usage*",
        ),
        "cgroup_path": dirs_under("plugin-cgroups/tests/fixtures/*/cgroup0")
        + rust_paths("plugin-cgroups/src/classify.rs"),
    }


def pod(node, i, labels=True):
    """A pod as the API server and the kubelet write it (the shape of
    workloads/tests/kubernetes.rs)."""
    uid = f"{i:08x}-{node}-4000-8000-{i:012}"
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": f"web-{i}",
            "namespace": "shop",
            "uid": uid,
            "resourceVersion": str(100 + i),
            "labels": {"app": f"web-{i}", "app.kubernetes.io/name": "shop"} if labels else None,
        },
        "spec": {"nodeName": node, "containers": [{"name": "app"}, {"name": "late"}]},
        "status": {
            "phase": "Running",
            "initContainerStatuses": [{"name": "setup", "containerID": f"cri-o://{i:064x}"}],
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{i + 1:064x}", "ready": True},
                {"name": "late", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}},
            ],
            "ephemeralContainerStatuses": None,
        },
    }


def http_response(status, body, content_type="application/json", extra=b""):
    reason = {200: b"OK", 404: b"Not Found", 500: b"Internal Server Error"}.get(status, b"X")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
        % (status, reason, content_type.encode(), len(body), extra)
        + body
    )


def grpc_frame(message):
    return b"\0" + len(message).to_bytes(4, "big") + message


def proto_field(number, payload):
    """A length-delimited protobuf field (strings and sub-messages)."""
    key = (number << 3) | 2
    out = bytearray([key])
    n = len(payload)
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + payload


def workload_seeds():
    import json

    inspect = json.dumps({
        "Id": "0123456789abcdef" * 4,
        "Name": "/shop-web-1",
        "Config": {"Image": "nginx:1.27", "Labels": {
            "com.docker.compose.project": "shop", "com.docker.compose.service": "web",
            "app": "front", "io.x/team": "a"}},
    }).encode()
    pod_inspect = json.dumps({"Id": "ab" * 32, "Name": "shop-pod"}).encode()
    label = lambda k, v: proto_field(1, k) + proto_field(2, v)
    status = (
        proto_field(1, b"0123456789abcdef" * 4)
        + proto_field(2, proto_field(1, b"nginx") + b"\x10\x01")
        + proto_field(8, proto_field(1, b"docker.io/library/nginx:1.27"))
        + proto_field(12, label(b"io.kubernetes.pod.name", b"web-7d4"))
        + proto_field(12, label(b"io.kubernetes.pod.namespace", b"shop"))
        + proto_field(12, label(b"io.kubernetes.container.name", b"nginx"))
    )
    pods = [pod("node-1", 1), pod("node-2", 2), pod("node-1", 3, labels=False)]
    watch = [
        {"type": "ADDED", "object": pods[0]},
        {"type": "MODIFIED", "object": pods[1]},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "1234"}}},
        {"type": "DELETED", "object": pods[2]},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                     "message": "too old resource version: 1 (5)"}},
    ]
    return {
        "engine_api": [
            http_response(200, inspect),
            http_response(200, pod_inspect),
            http_response(200, b'{"Name":"probe","Config":{"Image":"i","Labels":null}}'),
            http_response(404, b'{"message":"no such container"}'),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(inspect) + inspect + b"\r\n0\r\n\r\n",
        ],
        "cri_status": [
            grpc_frame(proto_field(1, status)),
            grpc_frame(proto_field(1, proto_field(1, b"ab" * 32) + proto_field(2, proto_field(1, b"db")))),
            grpc_frame(proto_field(1, b"0.1.0") + proto_field(2, b"containerd")
                       + proto_field(3, b"v1.7.13") + proto_field(4, b"v1")),
        ],
        "kube_pod_list": [
            json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "42"},
                        "items": pods}, indent=1).encode(),
            b'{"metadata":{},"items":null}',
            b'{"kind":"PodList","metadata":{"resourceVersion":"7"},"items":[{"metadata":{"uid":"b","labels":null},"spec":{"nodeName":"node-1"},"status":{}}]}',
        ],
        "kube_watch": [
            b"\n".join(json.dumps(e).encode() for e in watch) + b"\n",
            json.dumps(watch[0]).encode() + b"\n" + json.dumps(watch[2]).encode() + b"\n",
        ],
        "slurm_squeue": [
            b"alice\tphys\tgpu\tlow\t40\t2\t42\ttrain\n",
            b"bob\t(null)\tbatch\tnormal\t7\tN/A\t7\tmy job\twith\ttabs\n",
        ],
        "slurm_environ": [
            b"HOME=/home/alice\0SLURM_JOB_ID=42\0SLURM_JOB_NAME=train model\0SLURM_JOB_USER=alice\0"
            b"SLURM_JOB_ACCOUNT=physics\0SLURM_JOB_PARTITION=gpu\0SLURM_JOB_QOS=normal\0"
            b"SLURM_ARRAY_JOB_ID=40\0SLURM_ARRAY_TASK_ID=2\0AWS_SECRET_ACCESS_KEY=hunter2\0",
            b"SLURM_JOB_ID=7\0SLURM_JOB_NAME=x\0",
        ],
    }


def tree(root):
    """A directory as the rapl_sysfs input: `path NUL content NUL ...`."""
    out = bytearray()
    for here, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = os.path.join(here, name)
            with open(path, "rb") as f:
                content = f.read().replace(b"\0", b"")
            out += os.path.relpath(path, root).encode() + b"\0" + content + b"\0"
    return bytes(out)


def plugin_sections():
    """Fixture configs (a plugin's section without its header) under the
    header of the plugin they are for."""
    out = []
    plugins = {
        "plugin-procfs": "procfs", "plugin-cgroups": "cgroups", "plugin-influxdb": "influxdb",
        "plugin-energy-attribution": "energy-attribution", "plugin-energy-to-carbon": "energy-to-carbon",
        "plugin-cpu-power-model": "cpu-power-model", "plugin-prometheus": "prometheus",
        "plugin-csv": "csv", "plugin-rapl": "rapl", "plugin-nvidia": "nvidia",
        "plugin-opentelemetry": "opentelemetry",
    }
    for crate, name in plugins.items():
        for content in files(f"{crate}/tests/fixtures/*/config.toml"):
            out.append(b"[plugins.%s]\n" % name.encode() + content)
    return out


def toml_blocks(*patterns):
    """The ```toml blocks of Markdown files."""
    out = []
    for content in files(*patterns):
        out += [m.encode() for m in re.findall(r"```toml\n(.*?)```", content.decode(), re.S)]
    return out


def config_seeds():
    return {
        "rapl_sysfs": [tree(d) for d in sorted(glob.glob(os.path.join(ROOT, "plugin-rapl/tests/fixtures/*/sys0")))],
        "plugin_config": files("alumet-config.toml", "deploy/image/alumet-config.toml")
        + plugin_sections()
        + toml_blocks("README.md", "*/README.md", "docs/*.md"),
        "carbon_intensity": files(
            "plugin-energy-to-carbon/tests/fixtures/*/*.csv",
            "plugin-energy-to-carbon/data/*.csv",
        )
        + [b"# unix seconds\n1700000000,56.0\n1700003600.5,61\n", b"timestamp,g\n2024-03-01T13:00:00+01:00,12\n"],
    }


def http_seeds():
    get = lambda headers: b"GET /metrics HTTP/1.1\r\nHost: localhost:9091\r\n" + headers + b"\r\n"
    otlp_partial = proto_field(1, b"\x08\x03" + proto_field(2, b"3 points had no name"))
    return {
        "prometheus_request": [
            get(b"Authorization: Bearer fuzz-token-5ecret\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"),
            get(b"Authorization: Basic dXNlcjpwYXNz\r\nAccept: text/plain\r\n"),
            get(b"Authorization: bearer  wrong\r\n"),
            get(b"") + get(b"Connection: close\r\n"),
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /other HTTP/1.0\r\n\r\n",
        ],
        "influxdb_response": [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nX-Influxdb-Error: partial write: field type conflict\r\n\r\n"
            b'{"code":"invalid","message":"partial write: field type conflict"}',
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\r\n"
            b'{"code":"unauthorized","message":"token fuzz-token-5ecret is not valid"}',
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After:  7 \r\nContent-Type: text/plain\r\n\r\noverloaded",
            b"HTTP/1.1 413 Payload Too Large\r\n\r\n" + b"x" * 400,
        ],
        "otlp_response": [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\r\n" + otlp_partial,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
            b'{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"bad fuzz-token-5ecret"}}',
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n"
            b'{"code":3,"message":"invalid metric"}',
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
        ],
    }


def read_or(path, default=b""):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return default


def redfish_tree(root):
    """A mockup as the redfish_documents input: `path NUL body NUL ...`,
    each `redfish/v1/<path>/index.json` served as `/redfish/v1/<path>`
    (the service root as `/redfish/v1/`)."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "redfish", "**", "index.json"), recursive=True)):
        rel = "/" + os.path.relpath(os.path.dirname(path), root).replace(os.sep, "/")
        if rel == "/redfish/v1":
            rel += "/"
        out += [rel.encode(), read_or(path)]
    return out


def redfish_seeds():
    """The mockups, whole and one chassis at a time, with readings that
    change between polls (a second body of the same path), and a chassis
    with an energy sensor (the unit tests' shape of the Sensor schema)."""
    seeds = []
    for mockup in sorted(glob.glob(os.path.join(ROOT, "plugin-redfish/tests/mockups/*"))):
        parts = redfish_tree(mockup)
        seeds.append(b"\0".join(parts))
        env = "/redfish/v1/Chassis/1U/EnvironmentMetrics"
        later = []
        for kwh, watts in [(100.001, 310.0), (100.002, 320.5), (3.0, 300.0), (3.0, 300.0)]:
            later += [env.encode(), ('{"EnergykWh":{"Reading":%s},"PowerWatts":{"Reading":%s}}' % (kwh, watts)).encode()]
        seeds.append(b"\0".join(parts + later))
        power = "/redfish/v1/Chassis/2U/Power"
        later = []
        for watts in [150, 0, 480.25]:
            later += [power.encode(), ('{"PowerControl":[{"PowerConsumedWatts":%s}]}' % watts).encode()]
        seeds.append(b"\0".join(parts + later))
    root = b'{"Chassis":{"@odata.id":"/redfish/v1/Chassis"},"Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}'
    sensors = [
        b"/redfish/v1/", root,
        b"/redfish/v1/Chassis", b'{"Members":[{"@odata.id":"/redfish/v1/Chassis/1"}]}',
        b"/redfish/v1/Chassis/1", b'{"Id":"1","ChassisType":"Blade","Sensors":{"@odata.id":"/redfish/v1/Chassis/1/Sensors"}}',
        b"/redfish/v1/Chassis/1/Sensors", b'{"Members":[{"@odata.id":"/redfish/v1/Chassis/1/Sensors/PS1Energy"},{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Temp"},{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Energy"}]}',
        b"/redfish/v1/Chassis/1/Sensors/PS1Energy", b'{"Id":"PS1Energy","ReadingType":"EnergyJoules","PhysicalContext":"PowerSupply","Reading":1.0}',
        b"/redfish/v1/Chassis/1/Sensors/Temp", b'{"Id":"Temp","ReadingType":"Temperature","Reading":30.0}',
        b"/redfish/v1/Chassis/1/Sensors/Energy", b'{"Id":"Energy","ReadingType":"EnergyWh","PhysicalContext":"Chassis","Reading":100.0}',
        b"/redfish/v1/Chassis/1/Sensors/Energy", b'{"Id":"Energy","ReadingType":"EnergyWh","PhysicalContext":"Chassis","Reading":100.5}',
        b"/redfish/v1/Chassis/1/Sensors/Energy", b'{"Id":"Energy","ReadingType":"EnergyWh","PhysicalContext":"Chassis","Reading":101}',
    ]
    seeds.append(b"\0".join(sensors))
    joules = [
        b"/redfish/v1/", root,
        b"/redfish/v1/Chassis", b'{"Members":[{"@odata.id":"/redfish/v1/Chassis/N"}]}',
        b"/redfish/v1/Chassis/N", b'{"Id":"N","ChassisType":"StandAlone","EnvironmentMetrics":{"@odata.id":"/redfish/v1/Chassis/N/EnvironmentMetrics"}}',
    ]
    for j in [5000, 5000, 8000.5, 4000]:
        joules += [b"/redfish/v1/Chassis/N/EnvironmentMetrics", b'{"EnergyJoules":{"Reading":%d},"PowerWatts":{"Reading":300}}' % j]
    seeds.append(b"\0".join(joules))
    return {"redfish_documents": seeds}


def hwmon_seeds():
    """The fixtures' devices in hwmon_values' layout (see
    fuzz-targets/src/hwmon.rs): a device with power or V x I channels as
    hwmon0, one with energy counters as hwmon1, the values of each poll
    from the fixture's successive trees (sys0, sys1...)."""
    seeds = []
    for fixture in sorted(glob.glob(os.path.join(ROOT, "plugin-hwmon/tests/fixtures/*"))):
        trees = sorted(glob.glob(os.path.join(fixture, "sys*")), key=lambda p: int(p.rsplit("sys", 1)[1]))
        if not trees:
            continue
        rel = lambda d: os.path.relpath(d, trees[0])
        devices = [os.path.dirname(n) for n in sorted(glob.glob(os.path.join(trees[0], "devices", "**", "name"), recursive=True))]
        power = [d for d in devices if glob.glob(os.path.join(d, "power*_*")) or glob.glob(os.path.join(d, "in*_label"))]
        energy = [d for d in devices if glob.glob(os.path.join(d, "energy*_input"))]
        rails = [None]
        for d in power:
            if read_or(os.path.join(d, "name")).strip() == b"ina3221":
                rails = [1, 2, 3]
        for p_dev in power or [None]:
            for e_dev in energy or [None]:
                for rail in rails:
                    def attr(dev, name):
                        return read_or(os.path.join(dev, name)) if dev else b""
                    slot = b""
                    parent = p_dev.split("/hwmon/")[0].rsplit("/", 1)[1] if p_dev and "/hwmon/" in p_dev else ""
                    if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", parent):
                        slot = b"PCI_SLOT_NAME=" + parent.encode() + b"\n"
                    label1 = attr(p_dev, "power1_oem_info") or attr(p_dev, "power1_label")
                    parts = [
                        attr(p_dev, "name"), attr(p_dev, "power1_average_interval"), label1,
                        attr(p_dev, "power2_label"), attr(p_dev, "in%d_label" % rail) if rail else b"", slot,
                        attr(e_dev, "name"), attr(e_dev, "energy1_label"), attr(e_dev, "energy2_label"),
                    ]
                    for tree in trees:
                        def val(dev, *names):
                            if not dev:
                                return b""
                            for n in names:
                                v = read_or(os.path.join(tree, rel(dev), n), None)
                                if v is not None:
                                    return v
                            return b""
                        parts += [
                            val(p_dev, "power1_average", "power1_input"), val(p_dev, "power2_input", "power2_average"),
                            val(p_dev, "in%d_input" % rail) if rail else b"", val(p_dev, "curr%d_input" % rail) if rail else b"",
                            val(e_dev, "energy1_input"), val(e_dev, "energy2_input"),
                        ]
                    seeds.append(b"\0".join(parts))
    return {"hwmon_values": seeds}


def main():
    seeds = {}
    seeds.update(config_seeds())
    seeds.update(http_seeds())
    seeds.update(kernel_seeds())
    seeds.update(workload_seeds())
    seeds.update(redfish_seeds())
    seeds.update(hwmon_seeds())
    wanted = sys.argv[1:] or sorted(seeds)
    for target in wanted:
        out = os.path.join(SEEDS, target)
        os.makedirs(out, exist_ok=True)
        distinct = {hashlib.sha1(s).hexdigest(): s for s in seeds[target]}
        for name, content in distinct.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(content)
        print(f"{target}: {len(distinct)} seeds")


if __name__ == "__main__":
    main()
