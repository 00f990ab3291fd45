"""Time the ``mpnet`` task's model load: the first (reassemble the zip from the five part
packages, check, extract, load) and a second one (the cached folder reused), each in a fresh
process, so CI's cost of running the mpnet tests can be judged.

    python benchmarks/mpnet_load.py [--cache-dir DIR]   # DIR is emptied first
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = """
import time, torch
t0 = time.perf_counter()
from paretoml.objectives.tasks import mpnet
t1 = time.perf_counter()
folder = mpnet.model_folder()
t2 = time.perf_counter()
loaded = mpnet.load_encoder(torch.device("cpu"))
t3 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="paretoml-mpnet-cache-")
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PARETOML_CACHE_DIR": cache}
    env.pop("PARETOML_MPNET_FOLDER", None)
    print(f"cache {cache}; torch threads: default; {os.cpu_count()} CPUs")
    print("| load | import s | folder (reassemble + check + extract) s | transformers load s | process wall s |")
    print("|---|---|---|---|---|")
    for label in ("first", "second"):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        imported, folder, load = done.stdout.split()
        print(f"| {label} | {imported} | {folder} | {load} | {wall:.2f} |")
    if not args.cache_dir:
        shutil.rmtree(cache)


if __name__ == "__main__":
    main()
