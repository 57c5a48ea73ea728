#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: the
# real InfluxDB-protocol servers (Debian packages) that the influxdb tests
# start, openssl, and opentelemetry-proto for the OTLP test receiver.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
cargo test --workspace --locked
