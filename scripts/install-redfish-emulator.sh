#!/usr/bin/env bash
# Installs what plugin-redfish's tests start on loopback: sushy-tools (PyPI),
# whose static emulator `sushy-static` serves the DMTF-format mockups of
# plugin-redfish/tests/mockups over HTTPS, into the `python3` the tests run
# (ALUMET_TEST_PYTHON, default python3), with pip; `--break-system-packages`
# where Debian's pip refuses to touch the system Python (sushy-tools is pure
# Python and conflicts with no Debian package). Also `openssl`, which
# scripts/make-test-certs.sh uses for the emulator's certificate.
# Idempotent: does nothing when sushy_tools already imports.
set -euo pipefail

python=${ALUMET_TEST_PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

apt_install() {
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "install-redfish-emulator: run as root (or install sudo) to install: $*" >&2
        exit 1
    fi
    if ! apt-cache show "$@" >/dev/null 2>&1; then
        $SUDO apt-get update -q
    fi
    $SUDO apt-get install -y -q --no-install-recommends "$@"
}

have_sushy() {
    "$python" -c 'import sushy_tools.static.main' >/dev/null 2>&1
}

command -v "$python" >/dev/null 2>&1 || apt_install python3
command -v openssl >/dev/null 2>&1 || apt_install openssl
if have_sushy; then
    echo "install-redfish-emulator: sushy-tools is already installed for $python"
    exit 0
fi
"$python" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
pip_install() { $SUDO "$python" -m pip install -q --disable-pip-version-check "$@" sushy-tools; }
pip_install 2>/dev/null || pip_install --break-system-packages
if have_sushy; then
    echo "install-redfish-emulator: installed sushy-tools for $python"
else
    echo "install-redfish-emulator: sushy-tools still cannot be imported by $python" >&2
    exit 1
fi
