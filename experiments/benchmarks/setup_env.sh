#!/usr/bin/env bash
# Creates the benchmark environment .venv-bench (gitignored) at the repository root:
# the project's pinned requirements.txt, jaxflows (editable), and the PyTorch peer
# normflows with torch pinned to 2.13.0 (the CPU wheel; pip never picks another torch
# because it is named explicitly on the same command line as normflows).
#
# Usage (from a fresh clone):
#     bash experiments/benchmarks/setup_env.sh
#     .venv-bench/bin/python experiments/benchmarks/vs_normflows.py
#     .venv-bench/bin/python experiments/benchmarks/compile_depth.py
#     .venv-bench/bin/python experiments/benchmarks/utilisation.py
#     .venv-bench/bin/python experiments/benchmarks/memory.py
#
# Environment variables: PYTHON (default python3, must be 3.11 for the pinned wheels),
# VENV (default .venv-bench).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-bench}
TORCH_VERSION=2.13.0
NORMFLOWS_VERSION=1.7.3

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch==2.13.0 also matches a local CPU wheel 2.13.0+cpu where pip's find-links (pip
# config or PIP_FIND_LINKS) provide one (it sorts above the plain 2.13.0); otherwise add
# --extra-index-url https://download.pytorch.org/whl/cpu to get the CPU build.
"${PIP[@]}" -r requirements.txt "torch==${TORCH_VERSION}" "normflows==${NORMFLOWS_VERSION}"
"${PIP[@]}" --no-deps -e .

# Fail loudly if anything replaced the pinned torch.
"$VENV/bin/python" - <<PY
import torch, normflows, jax
assert torch.__version__.split("+")[0] == "${TORCH_VERSION}", torch.__version__
print("torch", torch.__version__, "| normflows", normflows.__version__, "| jax", jax.__version__,
      jax.default_backend())
PY
