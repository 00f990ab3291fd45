#!/usr/bin/env bash
# On the lent GPU machine (device tool): torchao's kernels against ours and bf16 at minilm's
# shapes (benchmarks/torchao_kernels.py). Run from a copy of the tree with the wheels in
# ../whl (torchao 0.18.0 is cp310-abi3: it installs on the device's Python 3.12 / torch 2.11;
# optuna and pydantic are what `paretoml.objectives.deploy` imports).
# Usage: bash benchmarks/device_torchao.sh BUDGET_S
set -uo pipefail
export PYTHONUNBUFFERED=1
site=/tmp/site
mkdir -p "$site/paretoml"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" ../whl/*.whl || exit 1
# the package layout of pyproject.toml's package-dir, without a build
cp -r python_api/. "$site/paretoml/"
for d in search_space objectives surrogates service dashboard studies; do ln -s "$PWD/$d" "$site/paretoml/$d"; done
export PYTHONPATH="$site" PARETOML_CACHE_DIR=/tmp/paretoml-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout "${2:-140}" python3 -W ignore benchmarks/torchao_kernels.py --device cuda --rows 1 16 256 4096 --compiled \
  --budget-s "${1:-95}" --out "$OUT/torchao-kernels-h200" > "$OUT/log.txt" 2>&1
echo "exit $?"; grep -v "^w\|^fp8" "$OUT/log.txt" | grep -iv warn | tail -20; cat "$OUT/torchao-kernels-h200.md"
