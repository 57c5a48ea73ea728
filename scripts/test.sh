#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: the
# real servers (Debian packages) the tests start on loopback: InfluxDB and
# VictoriaMetrics for the influxdb tests, Prometheus and promtool for the
# prometheus ones; openssl, and opentelemetry-proto for the OTLP test receiver;
# and the Debian packaging tools (lintian, cargo-deb, ...) that the package
# test (app-agent/tests/package_deb.rs) uses; and the headless browser the
# plot tests render pictures with; and the real workload managers (podman,
# dockerd, Slurm with munge, libvirt/QEMU) that app-agent/tests/managers.rs
# starts through scripts/managers.sh; and helm, kubernetes-validate,
# checkov and the prometheus-operator schemas (npm) that the Helm chart's
# tests (deploy/tests/helm.rs) run, into .k8s-tools/; and mmdebstrap,
# buildah, skopeo and podman for the container image's test
# (app-agent/tests/fleet_image.rs, which builds the image); and sushy-tools'
# Redfish emulator (sushy-static) that plugin-redfish's tests serve their
# mockups with.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
bash scripts/install-packaging-deps.sh
bash scripts/install-browser.sh
bash scripts/install-managers.sh
bash scripts/install-k8s-tools.sh
bash scripts/install-image-tools.sh
bash scripts/install-redfish-emulator.sh
cargo test --workspace --locked
