#!/usr/bin/env bash
# On the lent 16-core machine: the search-efficiency benchmark, seeds and methods in parallel.
# Usage (device tool, carrying .whl): bash benchmarks/device_search.sh TRIALS SEEDS METHOD...
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl >/dev/null 2>&1 || exit 1
tar xJf .whl/ray-core.tar.xz -C "$site" || exit 1
export PYTHONPATH="$site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >/dev/null 2>&1 || exit 1
export PARETOML_CACHE_DIR=/tmp/paretoml-cache OMP_NUM_THREADS=1
python3 -c 'from paretoml.objectives.tasks.registry import create_task; import torch
for t in ("digits-cnn", "digits-merge"): create_task(t).load(torch.device("cpu"))'
trials=$1; seeds=$2; shift 2
python3 benchmarks/search_efficiency.py run --out "$OUT/search_efficiency.json" --trials "$trials" --seeds "$seeds" \
  --jobs "$(nproc)" --methods "$@" 2>&1 | tail -5
python3 -c 'import platform, os; print(os.cpu_count(), "cores", platform.processor())' > "$OUT/machine.txt"
