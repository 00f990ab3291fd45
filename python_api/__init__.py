"""ParetoML: search for the smallest, fastest model that keeps its accuracy.

The Python API, for notebooks and scripts:

* :func:`search` compresses your own ``torch.nn.Module`` against your ``evaluate`` function
  (see README, "Compress your own model");
* :func:`search_causal_lm` compresses a causal LM of your own (a Hugging Face folder or a
  GGUF file) with the ``causal-lm`` task's data and metrics;
* :func:`export` writes a trial of such a study (rebuilt from your model) as ``paretoml
  export`` writes a registered task's;
* :func:`load_compressed` loads a model exported from a study (its folder or REST's zip).

Both are imported on first use, so ``import paretoml`` stays light. The subpackages
(``paretoml.search_space``, ``paretoml.objectives``, ...) live in their own folders of
the repository, mapped into this package by ``pyproject.toml``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["export", "load_compressed", "search", "search_causal_lm"]

_LAZY = {
    "search": ("paretoml.service.own_model", "search"),
    "export": ("paretoml.service.own_model", "export"),
    "search_causal_lm": ("paretoml.service.own_causal_lm", "search_causal_lm"),
    "load_compressed": ("paretoml.objectives.deploy", "load_compressed"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'paretoml' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ImportError(f"paretoml.{name} needs {module_name}, which this installation does not have "
                              f"({exc})") from exc
        raise
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"paretoml.{name}: {module_name} defines no {attribute!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
