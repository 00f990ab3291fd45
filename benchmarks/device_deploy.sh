#!/usr/bin/env bash
# On the lent GPU machine (device tool, carrying the wheels in .whl): the per-layer kernel
# table of the deployable formats, then a small bits study with measured latencies.
# Usage: bash benchmarks/device_deploy.sh [study options]
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl >/dev/null 2>&1 || exit 1
export PYTHONPATH="$site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >/dev/null 2>&1 || exit 1
export PARETOML_CACHE_DIR=/tmp/paretoml-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c 'import torch; from paretoml.objectives.deploy import kernels_on
print("torch", torch.__version__, "capability", torch.cuda.get_device_capability(), "kernels", sorted(kernels_on(torch.device("cuda"))))' 2>&1 | tee -a "$OUT/machine.txt"
timeout 240 python3 benchmarks/deploy_kernels.py --device cuda --out "$OUT/deploy_kernels_h200.md" > "$OUT/kernels.log" 2>&1
tail -5 "$OUT/kernels.log"
cp /tmp/paretoml-cache/kernel-times/*.json "$OUT/" 2>/dev/null
timeout 300 python3 benchmarks/deploy_gpu_study.py --out "$OUT/study" "$@" 2>&1 | tee "$OUT/study.log" | tail -60
rm -f "$OUT/study/deploy_gpu_study.db"
