#!/usr/bin/env bash
# Installs what the Debian-package test (app-agent/tests/package_deb.rs)
# needs: cargo-deb (from crates.io), and from Debian's packages lintian,
# dpkg-dev tools, man-db (`man`), udev (`udevadm`), adduser, and systemd
# (for `systemd-analyze verify` and deb-systemd-helper's systemctl).
# Idempotent; the Debian part needs root (or sudo).
set -euo pipefail

. "$(dirname "$0")/lib/apt.sh"

# Debian package:the command it provides
apt_install_missing install-packaging-deps \
    lintian:lintian dpkg:dpkg-deb man-db:man udev:udevadm adduser:addgroup \
    systemd:systemd-analyze init-system-helpers:deb-systemd-helper
echo "install-packaging-deps: lintian, dpkg, man-db, udev, adduser and systemd are installed"

if cargo deb --version >/dev/null 2>&1; then
    echo "install-packaging-deps: $(cargo deb --version 2>/dev/null | head -n 1) is installed"
else
    cargo install cargo-deb --locked
fi
