#!/usr/bin/env bash
# Render `dvc plots show` without internet and screenshot it with headless Chromium.
#
#   apt-get install chromium npm  # Debian's packages
#   scripts/screenshot_plots.sh [dvc plots show args...]
#   -> dvc_plots/index.html (works offline: the chart libraries sit beside it)
#      dvc_plots/screenshot.png
#
# DVC's page loads vega from a CDN; this serves the same libraries from npm instead.
# For images without a browser or npm: `causal-lm-data plots` (PNG/SVG, offline). This
# script is for DVC's interactive page (zoom, tooltips) and a screenshot of it.
# Nothing in dvc_plots/ changes unless every step succeeds.
set -euo pipefail

fail() { echo "error: $*" >&2; exit 1; }
command -v dvc >/dev/null || fail "dvc is not on PATH; activate the project's environment: . .venv/bin/activate"
command -v npm >/dev/null || fail "npm is missing; install it (Debian: apt-get install npm)"
command -v chromium >/dev/null || fail "chromium is missing; install it (Debian: apt-get install chromium)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

npm install --silent --no-audit --no-fund --prefix "$work" vega@5 vega-lite@5 vega-embed@6 >/dev/null 2>"$work/npm.log" \
  || fail "npm could not install vega, vega-lite and vega-embed (no registry?): $(tail -n 1 "$work/npm.log")"
dvc plots show -o "$work/page" "$@" >/dev/null 2>"$work/dvc.log" \
  || fail "dvc plots show failed: $(tail -n 1 "$work/dvc.log")"
for library in vega vega-lite vega-embed; do
  cp "$work/node_modules/$library/build/$library.min.js" "$work/page/"
done
sed -i -E \
  -e "s#https://cdn.jsdelivr.net/npm/vega@[0-9.]+#vega.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-lite@[0-9.]+#vega-lite.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-embed@[0-9.]+#vega-embed.min.js#" \
  "$work/page/index.html"

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chromium" --hide-scrollbars --window-size=1100,1500 \
  --virtual-time-budget=5000 --screenshot="$work/page/screenshot.png" \
  "file://$work/page/index.html" 2>"$work/chromium.log" \
  || fail "chromium could not render the page: $(tail -n 1 "$work/chromium.log")"
[ -s "$work/page/screenshot.png" ] || fail "chromium wrote no screenshot"

rm -rf dvc_plots
mv "$work/page" dvc_plots
echo "dvc_plots/index.html dvc_plots/screenshot.png"
