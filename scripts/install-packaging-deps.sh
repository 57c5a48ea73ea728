#!/usr/bin/env bash
# Installs what the Debian-package test (app-agent/tests/package_deb.rs)
# needs: cargo-deb (from crates.io), and from Debian's packages lintian,
# dpkg-dev tools, man-db (`man`), udev (`udevadm`), adduser, and systemd
# (for `systemd-analyze verify` and deb-systemd-helper's systemctl).
# Idempotent; the Debian part needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    fi
fi

# command -> Debian package that provides it
declare -A wanted=(
    [lintian]=lintian
    [dpkg-deb]=dpkg
    [man]=man-db
    [udevadm]=udev
    [addgroup]=adduser
    [systemd-analyze]=systemd
    [deb-systemd-helper]=init-system-helpers
)
missing=()
for cmd in "${!wanted[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
        missing+=("${wanted[$cmd]}")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "install-packaging-deps: run as root (or install sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    need_update=0
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || need_update=1
    done
    if [ "$need_update" -eq 1 ]; then
        $SUDO apt-get update -q
    fi
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    echo "install-packaging-deps: installed ${missing[*]}"
else
    echo "install-packaging-deps: lintian, dpkg, man-db, udev, adduser and systemd are installed"
fi

if cargo deb --version >/dev/null 2>&1; then
    echo "install-packaging-deps: $(cargo deb --version 2>/dev/null | head -n 1) is installed"
else
    cargo install cargo-deb --locked
fi
