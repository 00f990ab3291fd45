#!/usr/bin/env bash
# Here (not on the GPU machine): the parts benchmarks/device_front.sh carries, in .dev/k1-k6
# (ignored by git), each small enough for one device call beside the working tree (about
# 8 MiB): the wheels the GPU image lacks, and all-MiniLM-L6-v2 and all-mpnet-base-v2 as fp16
# safetensors folders (the GPU computes in bf16, so fp16 storage loses nothing it keeps).
# Usage: bash benchmarks/device_front_parts.sh   (after make setup and the mpnet extra)
set -euo pipefail
dev=.dev; rm -rf $dev/k? $dev/w && mkdir -p $dev/w $dev/k1 $dev/k2 $dev/k3 $dev/k4 $dev/k5 $dev/k6
wheels="alembic annotated-types colorlog Mako moocore optuna platformdirs pydantic pydantic_core SQLAlchemy
        typing-inspection torchao greenlet cffi pycparser"
pins=$(for w in $wheels; do .venv/bin/python -m pip show "$w" 2>/dev/null | awk -v n="$w" '/^Version:/ {print n "==" $2}'; done)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d $dev/w $pins
.venv/bin/python - <<'PY'
from pathlib import Path
import shutil
import torch
from safetensors.torch import load_file, save_file
from paretoml.objectives.tasks import minilm, mpnet
for name, module in (("minilm", minilm), ("mpnet", mpnet)):
    src, dst = Path(module.model_folder()), Path(f"/tmp/{name}-fp16")
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    tensors = {}
    for f in src.glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
PY
tar cf /tmp/minilm.tar -C /tmp minilm-fp16 && tar cf /tmp/mpnet.tar -C /tmp mpnet-fp16
md5sum /tmp/minilm.tar /tmp/mpnet.tar > $dev/k1/sums.txt
split -b 40M -d -a 1 /tmp/minilm.tar /tmp/minilm.part. && split -n 5 -d -a 1 /tmp/mpnet.tar /tmp/mpnet.part.
cp $dev/w/*.whl $dev/k1/ && mv /tmp/minilm.part.0 $dev/k1/ && mv /tmp/minilm.part.1 /tmp/mpnet.part.0 $dev/k2/
for i in 1 2 3 4; do mv /tmp/mpnet.part.$i $dev/k$((i + 2))/; done
rm -f /tmp/minilm.tar /tmp/mpnet.tar
du -sh $dev/k?
