#!/usr/bin/env python3
"""Writes the `config` part of deploy/helm/alumet-agent/values.schema.json
from the agent's shipped default configuration, alumet-config.toml: one
property per key, typed by its default value and described by the comment
above it; additionalProperties false, so that a misspelt key fails `helm
install` with its name. Keys the chart sets itself (CHART_OWNED) are left
out, so that setting them in `config` fails too.

Run it after a change of alumet-config.toml (deploy/tests/helm.rs fails,
naming the keys, when the two disagree):

    python3 deploy/helm/gen-config-schema.py
"""
import json
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "alumet-config.toml"
SCHEMA = ROOT / "deploy/helm/alumet-agent/values.schema.json"

# Keys the chart writes or refuses, one list for this script and the test.
CHART_OWNED = {
    line.strip()
    for line in (ROOT / "deploy/helm/chart-owned-keys.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}

STRINGS = {"type": "array", "items": {"type": "string"}}
# Types that a default value cannot tell (empty lists and tables), and the
# values a key accepts where its comment lists them.
# A rule of the filter plugin: each field a glob or "regex:...".
FILTER_RULE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{k: {"type": "string"} for k in ["metric", "resource_kind", "resource_id", "consumer_kind", "consumer_id"]},
        "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
GAUGE_FNS = {"type": "array", "items": {"enum": ["mean", "min", "max", "last"]}, "minItems": 1}

OVERRIDES = {
    "plugins.procfs.network_interfaces": STRINGS,
    "plugins.procfs.watch_patterns": STRINGS,
    "plugins.procfs.watch_pids": {"type": "array", "items": {"type": "integer", "minimum": 1}},
    "plugins.cgroups.exclude": STRINGS,
    "plugins.cgroups.include": STRINGS,
    "plugins.cgroups.hierarchy": {"enum": ["auto", "v2", "v1"]},
    "plugins.cgroups.select": {"enum": ["workloads", "all"]},
    "plugins.cgroups.names.container_labels": STRINGS,
    "plugins.cgroups.names.pod_labels": STRINGS,
    # "kubelet" needs nodes/proxy and the host's network: not offered here.
    "plugins.cgroups.names.kubernetes": {"enum": ["auto", "api_server", "off"]},
    "plugins.rapl.interface": {"enum": ["auto", "perf", "powercap"]},
    "plugins.nvidia.devices": STRINGS,
    "plugins.hwmon.drivers": STRINGS,
    "plugins.hwmon.exclude_drivers": STRINGS,
    "plugins.redfish.chassis": STRINGS,
    "plugins.cpu-power-model.curve": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    },
    "plugins.cpu-power-model.model": {"enum": ["auto", "tdp", "linear"]},
    "plugins.cpu-power-model.per": {"enum": ["vcpu", "socket"]},
    "plugins.energy-attribution.levels": {
        "type": "array",
        "items": {"enum": ["process", "cgroup"]},
    },
    "plugins.energy-attribution.idle_power_w": {
        "type": "object",
        "propertyNames": {"enum": ["package", "core", "uncore", "dram", "psys", "gpu"]},
        "additionalProperties": {"type": "number", "minimum": 0},
    },
    "plugins.csv.attribute_columns": STRINGS,
    "plugins.csv.timestamp_format": {"enum": ["rfc3339", "unix_ns"]},
    "plugins.influxdb.api": {"enum": ["v2", "v1"]},
    "plugins.influxdb.attributes_as": {"enum": ["tag", "field"]},
    "plugins.influxdb.field_attributes": STRINGS,
    "plugins.influxdb.tag_attributes": STRINGS,
    "plugins.influxdb.tags": {"type": "object", "additionalProperties": {"type": "string"}},
    "plugins.filter.filters": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "outputs": STRINGS,
                "keep": {"type": "array", "items": FILTER_RULE},
                "drop": {"type": "array", "items": FILTER_RULE},
            },
        },
    },
    "plugins.aggregate.outputs": STRINGS,
    "plugins.aggregate.metrics": STRINGS,
    "plugins.aggregate.gauge": GAUGE_FNS,
    "plugins.aggregate.gauge_per_metric": {"type": "object", "additionalProperties": GAUGE_FNS},
    "plugins.opentelemetry.protocol": {"enum": ["http/protobuf", "http/json"]},
    "plugins.opentelemetry.temporality": {"enum": ["cumulative", "delta"]},
    "plugins.opentelemetry.resource_attributes": {
        "type": "object",
        # The agent writes these three itself and refuses them here.
        "propertyNames": {"not": {"enum": ["service.name", "service.version", "host.name"]}},
        "additionalProperties": {"type": "string", "minLength": 1},
    },
}


def comments(text):
    """The comment lines above each key, by its dotted path."""
    found, table, pending = {}, [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            pending.append(line.lstrip("#").strip())
        elif line.startswith("["):
            table = line.strip("[]").split(".")
            pending = []
        elif "=" in line:
            key = line.split("=", 1)[0].strip()
            found[".".join(table + [key])] = " ".join(pending)
            pending = []
        else:
            pending = []
    return found


def typed(value, path):
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return STRINGS
    sys.exit(f"gen-config-schema: give the type of {path} in OVERRIDES (its default {value!r} does not say)")


def table(values, path, docs):
    props = {}
    for key, value in values.items():
        full = ".".join(path + [key])
        if full in CHART_OWNED:
            continue
        if full in OVERRIDES:
            prop = dict(OVERRIDES[full])
        elif isinstance(value, dict):
            prop = table(value, path + [key], docs)
        else:
            prop = typed(value, full)
        doc = docs.get(full)
        if doc:
            prop = {"description": doc, **prop}
        props[key] = prop
    return {"type": "object", "additionalProperties": False, "properties": props}


def main():
    text = DEFAULTS.read_text()
    defaults = tomllib.loads(text)
    docs = comments(text)
    config = table(defaults, [], docs)
    config = {
        "description": "The agent's configuration (alumet-config.toml as YAML), rendered into "
        "the ConfigMap. Generated from alumet-config.toml by deploy/helm/gen-config-schema.py.",
        **config,
    }
    plugins = config["properties"]["plugins"]["properties"]
    for name, plugin in plugins.items():
        plugins[name] = {"description": f"[plugins.{name}] (plugin-{name}/README.md)", **plugin}
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = config
    SCHEMA.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
