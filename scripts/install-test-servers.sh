#!/usr/bin/env bash
# Installs what the output tests start on loopback:
# - the InfluxDB-protocol servers of plugin-influxdb's tests: Debian's
#   `influxdb` (1.6.7, v1 API) and `victoria-metrics` (v1 and v2 write APIs);
# - for plugin-opentelemetry's OTLP receiver: the reference protobuf
#   definitions, PyPI packages `opentelemetry-proto` and `protobuf`, into the
#   `python3` the tests run (pip; `--break-system-packages` where Debian's
#   pip refuses to touch the system Python), and `openssl` for the TLS
#   tests' certificates.
# Idempotent; needs root (or sudo) on Debian/Ubuntu for what is missing.
#
# The packages ship services that would start a daemon on port 8086; the
# tests start their own instances, so this script forbids service starts
# during the install (policy-rc.d) and stops anything the package started.
set -euo pipefail

packages=(influxdb victoria-metrics)
binaries=(influxd victoria-metrics)

have_all() {
    local b
    for b in "${binaries[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/bin/$b" ] || return 1
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

# --- InfluxDB-protocol servers -------------------------------------------
if have_all; then
    echo "install-test-servers: influxd and victoria-metrics are already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "install-test-servers: run as root (or install sudo) to install: ${packages[*]}" >&2
    exit 1
fi

# Only refresh the package lists when apt does not know the packages yet.
need_update=0
for p in "${packages[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
        need_update=1
    fi
done
if [ "$need_update" -eq 1 ]; then
    $SUDO apt-get update -q
fi

# Forbid invoke-rc.d from starting services while the packages install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"

# Belt and braces: if a daemon got started anyway (systemd running), stop it,
# so that nothing of the package listens on 8086 / 8428.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now influxdb.service victoria-metrics.service >/dev/null 2>&1 || true
fi
for b in "${binaries[@]}"; do
    for pid in $(pgrep -x "$b" 2>/dev/null || true); do
        # Only daemons run by the packages' service users, never a test's own instance.
        owner=$(ps -o user= -p "$pid" 2>/dev/null || true)
        case "$owner" in
            influxdb | victoriametrics | victoria-metrics | _victoria-metrics)
                $SUDO kill "$pid" 2>/dev/null || true
                ;;
        esac
    done
done

if have_all; then
    echo "install-test-servers: installed ${packages[*]}"
else
    echo "install-test-servers: installation finished but a binary is missing (${binaries[*]})" >&2
    exit 1
fi
