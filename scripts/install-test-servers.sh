#!/usr/bin/env bash
# Installs what the output tests start on loopback, only what is missing:
# - Debian's `influxdb` (1.6.7, v1 API) and `victoria-metrics` (v1 and v2
#   write APIs) for plugin-influxdb, and `prometheus` (the server and
#   `promtool`) for plugin-prometheus;
# - for plugin-opentelemetry's OTLP receiver: the reference protobuf
#   definitions, PyPI packages `opentelemetry-proto` and `protobuf`, into the
#   `python3` the tests run (pip; `--break-system-packages` where Debian's
#   pip refuses to touch the system Python), and `openssl` for the TLS
#   tests' certificates.
# Idempotent; needs root (or sudo) on Debian/Ubuntu.
#
# The packages ship services that would start daemons (8086, 8428, 9090); the
# tests start their own instances, so this script forbids service starts
# during the install (policy-rc.d) and stops anything the package started.
set -euo pipefail

# package:binary pairs; a package is installed only when its binary is missing.
wanted=(influxdb:influxd victoria-metrics:victoria-metrics prometheus:prometheus prometheus:promtool)
binaries=()
for pair in "${wanted[@]}"; do
    binaries+=("${pair#*:}")
done

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]
}

have_all() {
    local b
    for b in "${binaries[@]}"; do
        have "$b" || return 1
    done
}

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

apt_install() {
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "install-test-servers: run as root (or install sudo) to install: $*" >&2
        exit 1
    fi
    if ! apt-cache show "$@" >/dev/null 2>&1; then
        $SUDO apt-get update -q
    fi
    $SUDO apt-get install -y -q --no-install-recommends "$@"
}

# --- OTLP receiver: opentelemetry-proto for python3, openssl -------------
python=${ALUMET_TEST_PYTHON:-python3}
have_otlp() {
    "$python" -c 'import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2' >/dev/null 2>&1
}
command -v "$python" >/dev/null 2>&1 || apt_install python3
command -v openssl >/dev/null 2>&1 || apt_install openssl
if have_otlp; then
    echo "install-test-servers: opentelemetry-proto is already installed for $python"
else
    "$python" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    pip_install() { $SUDO "$python" -m pip install -q --disable-pip-version-check "$@" opentelemetry-proto protobuf; }
    # Debian marks its Python externally managed (PEP 668); these two
    # pure-Python packages do not conflict with any Debian package.
    pip_install 2>/dev/null || pip_install --break-system-packages
    if have_otlp; then
        echo "install-test-servers: installed opentelemetry-proto for $python"
    else
        echo "install-test-servers: opentelemetry-proto still cannot be imported by $python" >&2
        exit 1
    fi
fi

# --- Servers ---------------------------------------------------------------
. "$(dirname "$0")/lib/apt.sh"
apt_install_missing install-test-servers "${wanted[@]}"

# Belt and braces: if a daemon got started anyway (systemd running), stop it,
# so that nothing of the package listens on 8086 / 8428.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now influxdb.service victoria-metrics.service prometheus.service >/dev/null 2>&1 || true
fi
for b in "${binaries[@]}"; do
    for pid in $(pgrep -x "$b" 2>/dev/null || true); do
        # Only daemons run by the packages' service users, never a test's own instance.
        owner=$(ps -o user= -p "$pid" 2>/dev/null || true)
        case "$owner" in
            influxdb | victoriametrics | victoria-metrics | _victoria-metrics | prometheus)
                $SUDO kill "$pid" 2>/dev/null || true
                ;;
        esac
    done
done

if have_all; then
    echo "install-test-servers: ${binaries[*]} are installed"
else
    echo "install-test-servers: installation finished but a binary is missing (${binaries[*]})" >&2
    exit 1
fi
