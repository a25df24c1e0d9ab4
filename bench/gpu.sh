#!/usr/bin/env bash
# The GPU check, in one run on a machine with CUDA: the CUDA tests, then the peer benchmarks on the GPU.
#   bash bench/gpu.sh      (from the repository root, after ./run has set up .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export LRP_WIDGETS_IMAGES=${LRP_WIDGETS_IMAGES:-$(cd .. && pwd)/shared/images}
.venv/bin/python -c "import torch; print(torch.cuda.get_device_name())"
.venv/bin/python -m pytest -q tests/test_gpu.py
.venv/bin/python -m bench lrp paths deconv atlas --device cuda --quick
