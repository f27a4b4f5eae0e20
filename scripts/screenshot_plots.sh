#!/usr/bin/env bash
# Render `dvc plots show` without internet and screenshot it with headless Chromium.
#
#   apt-get install chromium      # Debian's package; npm must be installed too
#   scripts/screenshot_plots.sh [dvc plots show args...]   # -> dvc_plots/screenshot.png
#
# DVC's page loads vega from a CDN; this serves the same libraries from npm instead.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

npm install --silent --no-audit --no-fund --prefix "$work" vega@5 vega-lite@5 vega-embed@6 >/dev/null
dvc plots show -o "$work/page" "$@" >/dev/null
sed -i -E \
  -e "s#https://cdn.jsdelivr.net/npm/vega@[0-9.]+#file://$work/node_modules/vega/build/vega.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-lite@[0-9.]+#file://$work/node_modules/vega-lite/build/vega-lite.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-embed@[0-9.]+#file://$work/node_modules/vega-embed/build/vega-embed.min.js#" \
  "$work/page/index.html"

mkdir -p dvc_plots
cp "$work/page/index.html" dvc_plots/index.html
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chromium" --hide-scrollbars --window-size=1100,1500 \
  --virtual-time-budget=5000 --screenshot="$PWD/dvc_plots/screenshot.png" \
  "file://$work/page/index.html" 2>/dev/null
echo "dvc_plots/screenshot.png"
