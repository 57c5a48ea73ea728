#!/usr/bin/env bash
# Installs what the plot tests render with: Debian's `chromium` (headless
# screenshots of the SVG and PNG files `exec --plot` and `plot` write) and
# `fonts-dejavu-core` (the font plotters draws text with). About 100 MB to
# download, 350 MB installed, 1-2 minutes. Idempotent; needs root (or sudo).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "install-browser: chromium and DejaVu fonts are already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: run as root (or install sudo) to install chromium fonts-dejavu-core" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
    $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
