#!/usr/bin/env bash
# Installs torch_geometric_binary and what its tests need into the current
# Python environment (python3, or $PYTHON).
#
# torch is pinned so that the CPU wheel is used (an unpinned torch pulls a
# multi-GB CUDA build); torch-cluster and our own C++ kernels compile against
# the installed torch, hence --no-build-isolation after torch is in place.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

cd "$(dirname "$0")/.."
"$PYTHON" -m pip install "torch==${TORCH_VERSION}"
"$PYTHON" -m pip install setuptools wheel
"$PYTHON" -m pip install --no-build-isolation torch-cluster
"$PYTHON" -m pip install --no-build-isolation -e '.[test]'
"$PYTHON" -c "import torch_cluster, torch_geometric_binary.nn; print('torch_geometric_binary installed')"
