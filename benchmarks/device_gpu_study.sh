#!/usr/bin/env bash
# On the lent GPU machine (device tool): the GPU study of benchmarks/gpu_study.py, in stages
# that fit the tool's calls. What one call installs or assembles stays for the next while
# the machine is warm. Carried (ignored) folders: .dev/w (wheels and a slimmed Ray),
# .dev/m1 (all-MiniLM-L6-v2 as fp16 safetensors), .dev/p1-p4 (all-mpnet-base-v2 fp16, a tar
# in four parts): the models travel as fp16 because a call carries at most 64 MiB; the
# GPU computes in bf16, so fp16 storage loses nothing it would keep.
# Usage: bash benchmarks/device_gpu_study.sh STAGE [gpu_study.py run options]
#   STAGE: check | minilm | mpnet (a run now) | bg-minilm NAME | bg-mpnet NAME (a run in its
#   own process session, which outlives this call while the machine stays warm) | none
#   (only install, assemble and collect). MPS=1 runs the stage under CUDA MPS (started here,
#   stopped after). Every run writes under /tmp/gs-out/<name>; each call ends by packing all
#   of /tmp/gs-out (runs still going included) into $OUT/gs.tgz, with the logs.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PARETOML_CACHE_DIR=/tmp/paretoml-cache
site=/tmp/site
if [ ! -f $site/.ok ]; then
  mkdir -p $site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $site .dev/w/*.whl || exit 1
  tar xJf .dev/w/ray-slim.tar.xz -C $site || exit 1
  touch $site/.ok
fi
# the project as an importable package: paretoml/ is python_api/ plus the mapped folders
root=/tmp/pkgroot
rm -rf $root && mkdir -p $root/paretoml && cp python_api/*.py $root/paretoml/
for d in search_space objectives surrogates service dashboard studies; do ln -sfn "$PWD/$d" $root/paretoml/$d; done
export PYTHONPATH="$site:$root"
# models carried in this call
mkdir -p /tmp/models/parts
if [ -d .dev/m1/minilm-fp16 ]; then rm -rf /tmp/models/minilm-fp16 && cp -r .dev/m1/minilm-fp16 /tmp/models/; fi
for p in .dev/p1 .dev/p2 .dev/p3 .dev/p4; do [ -d $p ] && cp $p/mpnet.part.* /tmp/models/parts/ 2>/dev/null; done
if [ ! -d /tmp/models/mpnet-fp16 ] && [ "$(ls /tmp/models/parts | wc -l)" = 4 ]; then
  cat /tmp/models/parts/mpnet.part.0{0,1,2,3} | tar xf - -C /tmp/models && echo "mpnet assembled"
fi
# the tasks load these folders instead of their packages (server-side variables)
export PARETOML_MINILM_FOLDER=/tmp/models/minilm-fp16 PARETOML_MPNET_FOLDER=/tmp/models/mpnet-fp16
stage=${1:-none}; shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv,noheader
mkdir -p /tmp/gs-out
mps_on() {  # a run asked for under MPS does not run without it
  [ "${MPS:-0}" = 1 ] || return 0
  if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then echo "MPS started"
  else echo "MPS: not available here; nothing run"; exit 1; fi
}
mps_off() { [ "${MPS:-0}" = 1 ] && echo quit | nvidia-cuda-mps-control 2>/dev/null; true; }
filter() { grep -v '^\[I \|optuna_warn\|ExperimentalWarning'; }
case $stage in
  check) python3 benchmarks/device_check.py 2>&1 | grep -v '^\[I ' ;;
  minilm|mpnet)
    name="fg-$(date +%s)"; mps_on
    python3 benchmarks/gpu_study.py run --task "$stage" --out /tmp/gs-out/$name --db-dir /tmp/gs-db/$name \
      --ray-dir /tmp/ray-$name "$@" 2>&1 | filter | tee /tmp/gs-out/$name.log
    mps_off ;;
  bg-minilm|bg-mpnet)
    name="bg-$1"; shift; mps_on
    setsid nohup python3 benchmarks/gpu_study.py run --task "${stage#bg-}" --out /tmp/gs-out/$name \
      --db-dir /tmp/gs-db/$name --ray-dir /tmp/ray-$name "$@" > /tmp/gs-out/$name.log 2>&1 < /dev/null &
    echo "started $name (pid $!)" ;;
  none) ;;
esac
for log in /tmp/gs-out/bg-*.log; do [ -f "$log" ] && { echo "== $log"; filter < "$log" | tail -4; }; done
# the GP studies' databases too: a GP run cut short by the device time is read from its trials
[ -n "${OUT:-}" ] && tar czf "$OUT/gs.tgz" -C /tmp gs-out $(cd /tmp && find gs-db -name '*-gp*.db' 2>/dev/null)
true
