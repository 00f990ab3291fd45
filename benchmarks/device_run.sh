#!/usr/bin/env bash
# Runs on the lent GPU machine (see the device tool): installs the carried wheels, then
# measures Ray-pool throughput on its cores and runs the demo study with CUDA measurement.
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 1
tar xJf .whl/ray-core.tar.xz -C "$site" || exit 1
export PYTHONPATH="$site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >/dev/null || exit 1
python3 -c 'import torch, ray, optuna; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "ray", ray.__version__, "optuna", optuna.__version__)'
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PARETOML_CACHE_DIR=/tmp/paretoml-cache
python3 benchmarks/throughput.py --workers 1 4 8 16 --trials 64 2>&1 | tee "$OUT/throughput.md"
sed -e 's/^seed: 0/seed: 0\nmeasure: {device: cuda, latency_threads: 1}/' -e 's/^name: digits-cnn-demo/name: digits-cnn-cuda/' \
  studies/digits_cnn.yaml > /tmp/cuda.yaml
cd /tmp && python3 -m paretoml.service.cli run /tmp/cuda.yaml --study-name cuda --storage sqlite:////tmp/cuda.db 2>&1 | tail -30 | tee "$OUT/cuda_demo.txt"
