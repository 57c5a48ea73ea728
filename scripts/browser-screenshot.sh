#!/usr/bin/env bash
# Renders a picture in a real browser: headless Chromium opens FILE (an SVG
# or PNG the agent wrote) and saves what it shows as the PNG screenshot OUT.
#     scripts/browser-screenshot.sh out.svg shot.png [1200,800]
# Exit 0 when the screenshot was written and is not empty; the plot tests
# then look at its pixels.
set -euo pipefail
file=$(realpath "$1")
out=$2
size=${3:-1200,800}
if ! command -v chromium >/dev/null 2>&1; then
    echo "browser-screenshot: chromium is not installed (bash scripts/install-browser.sh)" >&2
    exit 3
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$out" --window-size="$size" \
    "file://$file" >/dev/null 2>&1 || true
if [ ! -s "$out" ]; then
    echo "browser-screenshot: chromium wrote no screenshot of $file" >&2
    exit 1
fi
