#!/usr/bin/env bash
# Set up what is missing: a virtual environment in .venv with this package and its dev tools.
# PyTorch is installed first, as TORCH_SPEC (default torch==2.13.0, the CPU build that lies
# on our machines' disk); a plain `torch` requirement would pull a CUDA build of several GB.
# Set TORCH_SPEC to what fits your machine, e.g. TORCH_SPEC=torch for your CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
stamp=.venv/.layer-tying-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
