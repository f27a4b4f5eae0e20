#!/usr/bin/env bash
# Regenerates the pinned closures in this folder from pyproject.toml's extras with uv's
# resolver (`pip install uv`); versions already pinned are kept unless a change needs another.
# torch is left out of both files (pinned in ../requirements.txt and ../requirements-test.txt:
# the same pin serves the CPU build here and a CUDA build elsewhere), but its dependencies are
# resolved from its CPU build (torch-cpu.txt), so uv needs a place that has it, e.g.
#   UV_FIND_LINKS=/path/to/wheels requirements/compile.sh
#   UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu requirements/compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--no-emit-package torch --python-version 3.11 -c requirements/torch-cpu.txt --custom-compile-command requirements/compile.sh)
uv pip compile pyproject.toml --extra pipeline --extra cluster --extra clients --extra test "${common[@]}" -o requirements/test.txt
uv pip compile pyproject.toml --extra pipeline "${common[@]}" -c requirements/test.txt -o requirements/pipeline.txt
