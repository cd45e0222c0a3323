#!/usr/bin/env bash
# Installs the PyTorch peer's Python environment into .venv-peer (torch, safetensors, numpy, and
# transformers for scripts/check_hf_export.sh) from PyPI: about 4 GB with the CUDA libraries
# torch's wheels bring. Skipped when .venv-peer already imports them. The `peer` test suite and
# the HF export check use .venv-peer/bin/python when it exists and skip (77) otherwise; CI
# installs it. On a GPU machine that already has torch (the H200 these sessions borrow), the
# peer runs with that Python instead: nothing to install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-peer
check='import torch, safetensors, numpy, transformers; assert tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)'
if [[ -x $VENV/bin/python ]] && $VENV/bin/python -c "$check" 2>/dev/null; then
  echo "setup_peer: $VENV has torch $($VENV/bin/python -c 'import torch; print(torch.__version__)')"
  exit 0
fi
python3 -m venv "$VENV"
# NOTE: torch ≥ 2.5 for scaled_dot_product_attention(enable_gqa=...).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-peer.txt
"$VENV/bin/python" -c "$check"
echo "setup_peer: $VENV has torch $($VENV/bin/python -c 'import torch; print(torch.__version__)')"
