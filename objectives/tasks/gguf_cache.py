"""A GGUF file dequantised once into a Hugging Face folder in the paretoml cache.

``transformers`` reads GGUF through the ``gguf`` package and dequantises every tensor to
float on each load (about a minute for SmolLM2-135M on two cores). The result is written
once per machine as an ordinary causal-LM folder (``config.json``, ``model.safetensors``,
the tokenizer), under a file lock (processes loading the task at once wait for the first),
in a temporary folder renamed into place, so a folder under the final name is complete; its
manifest of file sizes is checked on each load, as for the packaged models
(:mod:`.model_parts`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from paretoml.objectives.tasks.cache import cache_dir
from paretoml.objectives.tasks.model_parts import MANIFEST, built_once

LOCK_TIMEOUT_S = 900.0


def gguf_cache_folder(gguf: Path) -> Path:
    """Where the dequantised folder of ``gguf`` lives (named after the file, its size and the
    transformers release that dequantised it)."""
    import transformers

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{transformers.__version__}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _write_manifest(folder: Path) -> None:
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=1, sort_keys=True))


def _dequantise(gguf: Path, into: Path) -> None:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32)
    # a model loaded from GGUF keeps a quantization config that refuses to be saved; its
    # tensors are plain floats by now, so the folder is an ordinary fp32 checkpoint
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)


def dequantised_folder(gguf: Path) -> Path:
    """The folder of ``gguf``'s dequantised model in the cache, built if missing."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf}")

    def build(tmp: Path) -> Path:
        built = tmp / "folder"
        _dequantise(gguf, built)
        _write_manifest(built)
        return built

    return built_once(gguf_cache_folder(gguf), build, LOCK_TIMEOUT_S, f"dequantising {gguf.name}")
