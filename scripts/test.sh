#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: the
# real InfluxDB-protocol servers (Debian packages) that the influxdb tests start,
# and the headless browser the plot tests render pictures with.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
bash scripts/install-browser.sh
cargo test --workspace --locked
