#!/usr/bin/env bash
# Set up what is missing: a virtual environment in .venv with this package and its dev tools.
# PyTorch is installed first, as TORCH_SPEC (default torch==2.13.0). On our CI and
# development machines that version resolves to a CPU build kept on their disk; from the
# public index on Linux x86_64, torch==2.13.0 is the CUDA build (several GB), and a CPU-only
# machine elsewhere wants TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
# Set TORCH_SPEC to what fits your machine, e.g. TORCH_SPEC=torch for your platform's default.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  read -r -a torch_spec <<< "${TORCH_SPEC:-torch==2.13.0}"  # a requirement and pip options
  .venv/bin/python -m pip install -q "${torch_spec[@]}"
fi
stamp=.venv/.layer-tying-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
