#!/usr/bin/env bash
# On the lent GPU machine (device tool, carrying the wheels in .whl): the per-layer kernel
# table of the deployable formats, then small bits studies with measured latencies, at one
# token (memory-bound, where weight-only int4 pays) and at 16 tokens per forward pass.
# Usage: bash benchmarks/device_deploy.sh TRIALS
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl >/dev/null 2>&1 || exit 1
export PYTHONPATH="$site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >/dev/null 2>&1 || exit 1
export PARETOML_CACHE_DIR=/tmp/paretoml-cache
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -W ignore -c 'import torch; from paretoml.objectives.deploy import kernels_on
print("torch", torch.__version__, "capability", torch.cuda.get_device_capability(), "kernels", sorted(kernels_on(torch.device("cuda"))))' | tee -a "$OUT/machine.txt"
timeout 270 python3 -W ignore benchmarks/deploy_kernels.py --device cuda --batches 1 16 4096 \
  --shapes 384x384 1536x384 384x1536 4096x4096 14336x4096 4096x14336 --out "$OUT/deploy_kernels_h200.md"
cp /tmp/paretoml-cache/kernel-times/*.json "$OUT/kernel_table.json"
for seq in 1 16; do
  timeout 150 python3 -W ignore benchmarks/deploy_gpu_study.py --seq "$seq" --trials "${1:-24}" --out "$OUT/s$seq" | tail -40
  rm -f "$OUT/s$seq/deploy_gpu_study.db"
done
