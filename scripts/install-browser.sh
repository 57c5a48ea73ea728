#!/usr/bin/env bash
# Installs what the plot tests render with: Debian's `chromium` (headless
# screenshots of the SVG and PNG files `exec --plot` and `plot` write) and
# `fonts-dejavu-core` (the font plotters draws text with). About 100 MB to
# download, 350 MB installed, 1-2 minutes. Idempotent; needs root (or sudo).
set -euo pipefail

. "$(dirname "$0")/lib/apt.sh"

apt_install_missing install-browser \
    chromium:chromium fonts-dejavu-core:/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
echo "install-browser: chromium and DejaVu fonts are installed"
