#!/usr/bin/env bash
# Installs what plugin-redfish's tests start on loopback: sushy-tools (PyPI),
# whose static emulator `sushy-static` serves the DMTF-format mockups of
# plugin-redfish/tests/mockups over HTTPS, into the `python3` the tests run
# (ALUMET_TEST_PYTHON, default python3), with pip; `--break-system-packages`
# where Debian's pip refuses to touch the system Python (sushy-tools is pure
# Python and conflicts with no Debian package). Also `openssl`, which
# scripts/make-test-certs.sh uses for the emulator's certificate.
# Idempotent: installs only what is missing; needs root (or sudo) for that.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

python=${ALUMET_TEST_PYTHON:-python3}
tag=install-redfish-emulator
have_sushy() {
    "$python" -c 'import sushy_tools.static.main' >/dev/null 2>&1
}

apt_install_missing "$tag" openssl:openssl
command -v "$python" >/dev/null 2>&1 || apt_install_missing "$tag" python3:python3
if have_sushy; then
    echo "$tag: sushy-tools is already installed for $python"
    exit 0
fi
"$python" -m pip --version >/dev/null 2>&1 || apt_install_missing "$tag" python3-pip:pip3
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
pip_install() { $SUDO "$python" -m pip install -q --disable-pip-version-check "$@" sushy-tools; }
pip_install 2>/dev/null || pip_install --break-system-packages
if have_sushy; then
    echo "$tag: installed sushy-tools for $python"
else
    echo "$tag: sushy-tools still cannot be imported by $python" >&2
    exit 1
fi
