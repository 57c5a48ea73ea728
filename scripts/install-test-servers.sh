#!/usr/bin/env bash
# Installs the servers that the tests start on loopback: Debian's `influxdb`
# (1.6.7, v1 API) and `victoria-metrics` (v1 and v2 write APIs) for
# plugin-influxdb, and `prometheus` (the server and `promtool`) for
# plugin-prometheus. Only what is missing is installed. Idempotent; needs
# root (or sudo) on Debian/Ubuntu.
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

packages=()
for pair in "${wanted[@]}"; do
    p="${pair%%:*}"
    if ! have "${pair#*:}" && [[ " ${packages[*]} " != *" $p "* ]]; then
        packages+=("$p")
    fi
done

if [ "${#packages[@]}" -eq 0 ]; then
    echo "install-test-servers: ${binaries[*]} are already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-servers: run as root (or install sudo) to install: ${packages[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive

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
    echo "install-test-servers: installed ${packages[*]}"
else
    echo "install-test-servers: installation finished but a binary is missing (${binaries[*]})" >&2
    exit 1
fi
