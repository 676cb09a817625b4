#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU (bench/README.md's "GPU" section holds the figures):
# the CUDA smoke tests and the unit tests with the auto precision (float16 autocast + GradScaler on CUDA),
# `python -m helpers check`, and `python -m bench --device cuda`. Uses the machine's own torch and torchvision;
# writes its logs to ${OUT:-gpu-check}.
set -u
OUT=${OUT:-gpu-check}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$OUT/gpu.txt"
echo "== CUDA smoke tests (float32 pinned by conftest except where a test asks for auto)"
$PY -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda-tests.txt"
echo "== unit tests on a GPU machine (notebooks and widgets left out: no nbval/ipywidgets there)"
$PY -m pytest tests -q -p no:cacheprovider -x --ignore=tests/test_notebooks.py \
  --ignore=tests/test_notebooks_full_path.py --ignore=tests/test_notebooks_own_photos.py \
  --ignore=tests/test_widgets.py -n 8 2>&1 | tail -25 | tee "$OUT/unit-tests.txt"
echo "== helpers check"
FLOWERS_TINY=1 FLOWERS_PRECISION=auto $PY -m helpers check 2>&1 | tee "$OUT/check.txt"
echo "== bench on CUDA"
$PY -m bench --device cuda --images 512 --markdown 2>&1 | tee "$OUT/bench.txt"
