#!/usr/bin/env bash
# Set up .venv with initlab installed in editable mode.
#
#   bash scripts/setup.sh          # the tool
#   bash scripts/setup.sh test     # the tool and its test dependencies
#   bash scripts/setup.sh dev      # the tool, tests, ruff and mypy
#
# The venv sees the system's site-packages, so a torch that is already installed (a
# GPU cluster's CUDA build, say) is reused, never replaced. Only when no torch can be
# imported is one installed: $TORCH_SPEC, by default torch==2.13.0 (a local CPU wheel on
# the team's machines; elsewhere pip takes PyPI's build, so set TORCH_SPEC or install the
# torch you want first).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: initlab needs Python >= 3.10; $python is $("$python" -V 2>&1)" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv --system-site-packages .venv
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra:+[$extra]}"
