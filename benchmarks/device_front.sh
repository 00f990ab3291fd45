#!/usr/bin/env bash
# On the lent GPU machine (device tool): issue 24's fronts, benchmarks/deploy_front.py
# --gpu-task minilm|mpnet, with the wheels and the fp16 model folders carried in parts over
# several calls (a call carries at most 64 MiB). Carried (ignored) folders, as made by
# benchmarks/device_front_parts.sh: .dev/k1 (wheels, MiniLM part 0, checksums), .dev/k2
# (MiniLM part 1, MPNet part 0), .dev/k3-k6 (MPNet parts 1-4); or any other folder .dev/rN
# of such parts (an mpnet-only rerun: wheels and MPNet part 0, then parts 1-4). Each call keeps what it
# brought under /tmp, for the next call while the machine is warm.
# Usage: bash benchmarks/device_front.sh STEP [ARGS] [STEP [ARGS]]...
#   check            kernels and torchao's probe on the GPU, a random BERT's deployable model
#                    at 16, 8 and 4 bits, and tests/objectives/deploy (torch 2.11)
#   bg TASK TRIALS   deploy_front.py for TASK in its own process session (it outlives the call)
#   wait SECONDS     until no run is going, or SECONDS
# Every call ends by packing the runs' logs and results into $OUT/front.tgz.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PARETOML_CACHE_DIR=/tmp/paretoml-cache
site=/tmp/site; store=/tmp/parts; models=/tmp/models; runs=/tmp/front-runs
mkdir -p $site $store $models $runs
for k in .dev/k? .dev/r?; do [ -d "$k" ] && cp --update=none "$k"/* $store/; done
if [ ! -f $site/.ok ] && ls $store/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $site $store/*.whl \
    && touch $site/.ok && echo "wheels installed"
fi
assemble() {  # NAME PARTS: the model folder, once all its parts are here and their sum matches
  [ -d $models/$1-fp16 ] && return
  [ "$(ls $store/$1.part.* 2>/dev/null | wc -l)" = "$2" ] || { echo "$1: $(ls $store/$1.part.* 2>/dev/null | wc -l) of $2 parts"; return; }
  cat $store/$1.part.* > /tmp/$1.tar && grep "/tmp/$1.tar" $store/sums.txt | md5sum -c --quiet \
    && tar xf /tmp/$1.tar -C $models && echo "$1 assembled"
  rm -f /tmp/$1.tar
}
assemble minilm 2; assemble mpnet 5
export PARETOML_MINILM_FOLDER=$models/minilm-fp16 PARETOML_MPNET_FOLDER=$models/mpnet-fp16
snapshot() {  # the tree as the package paretoml (python_api/ plus the mapped folders), copied
  rm -rf "$1" && mkdir -p "$1/paretoml" && cp -r benchmarks tests studies "$1/" && cp python_api/*.py "$1/paretoml/"
  for d in search_space objectives surrogates service dashboard studies; do cp -r "$d" "$1/paretoml/$d"; done
}
pkg=/tmp/pkg-now; snapshot $pkg
export PYTHONPATH="$site:$pkg"
while [ $# -gt 0 ]; do
  step=$1; shift
  case $step in
    check)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      (cd $pkg && timeout 200 python3 -c '
import torch, sys
sys.path.insert(0, "benchmarks")
from paretoml.objectives.deploy import kernels_on
from paretoml.objectives.deploy import torchao_kernels as T
cuda = torch.device("cuda")
print("torch", torch.__version__, "torchao", T.version(), "kernels", sorted(kernels_on(cuda)))
for k in T.TORCHAO_KERNELS:
    print(" ", k, T.probe(k, "cuda:0", torch.bfloat16) or "runs")
from device_check import check_graphs
check_graphs(cuda)
' 2>&1 | grep -v "^W1\|Failed to load")
      (cd $pkg && timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/objectives/deploy 2>&1 | tail -5) ;;
    bg)
      task=$1 trials=$2; shift 2
      snapshot $runs/$task-pkg
      (cd $runs/$task-pkg && PYTHONPATH="$site:$runs/$task-pkg" setsid nohup python3 benchmarks/deploy_front.py \
        --gpu-task "$task" --trials "$trials" --machine h200 --results $runs/results \
        > $runs/$task.log 2>&1 < /dev/null &)
      echo "started $task ($trials trials)" ;;
    wait)
      end=$((SECONDS + $1)); shift
      while [ $SECONDS -lt $end ] && pgrep -f deploy_front.py >/dev/null; do sleep 5; done ;;
  esac
done
for log in $runs/*.log; do [ -f "$log" ] && { echo "== $log"; grep -v '^\[I \|^W1\|Failed to load' "$log" | tail -6; }; done
pgrep -f deploy_front.py >/dev/null && echo "a run is still going"
[ -n "${OUT:-}" ] && tar czf "$OUT/front.tgz" -C /tmp front-runs/results $(cd /tmp && ls front-runs/*.log 2>/dev/null) \
  paretoml-cache/kernel-times 2>/dev/null
true
