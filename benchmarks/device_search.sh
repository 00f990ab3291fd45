#!/usr/bin/env bash
# On the lent 16-core machine: the search-efficiency benchmark, runs in parallel on all cores.
# Usage (device tool, carrying .whl): [RESUME_FROM=file] bash benchmarks/device_search.sh LIMIT_S [run options]
# Results go to $OUT/search_efficiency.json after every finished run; the command stops at
# LIMIT_S seconds. To continue a cut-off run, carry its file, name it in RESUME_FROM and pass --resume.
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl >/dev/null 2>&1 || exit 1
if [ -f .whl/ray-core.tar.xz ]; then tar xJf .whl/ray-core.tar.xz -C "$site" || exit 1; fi  # the benchmark itself needs no Ray
export PYTHONPATH="$site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . >/dev/null 2>&1 || exit 1
cores=$(nproc --all)  # before OMP_NUM_THREADS=1: plain nproc honours it and says 1
export PARETOML_CACHE_DIR=/tmp/paretoml-cache OMP_NUM_THREADS=1
if [ -n "${RESUME_FROM:-}" ]; then cp "$RESUME_FROM" "$OUT/search_efficiency.json" || exit 1; fi
python3 -c 'from paretoml.objectives.tasks.registry import create_task; import torch
for t in ("digits-cnn", "digits-merge"): create_task(t).load(torch.device("cpu"))'
limit=$1; shift
timeout "$limit" python3 benchmarks/search_efficiency.py run --out "$OUT/search_efficiency.json" \
  --jobs "$cores" "$@" 2>&1 | tee "$OUT/search_efficiency.log"
