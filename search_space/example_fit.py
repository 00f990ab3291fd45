"""Whether a model runs on its example inputs, and if not, one line that says why.

The example inputs are the user's (``paretoml.search(example_inputs=...)``) or a task's; a
wrong dtype or shape otherwise surfaces as a raw torch error from deep inside the forward
pass (and, when torch.fx traces it, a printed traceback of its own). This runs the model once
and names the first layer that the inputs reach, with the dtype and shape it expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ExampleInputsError(ValueError):
    """The example inputs do not fit the model; the message is one line."""


NOT_FITTING = "the example inputs do not fit the model"

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def expected_input(module: nn.Module) -> str:
    """What a layer takes, as a user would write it: dtype and shape."""
    if isinstance(module, nn.Embedding):
        return f"integer (torch.long) indices below {module.num_embeddings}, any shape"
    dtype = str(module.weight.dtype).removeprefix("torch.")
    if isinstance(module, nn.Linear):
        return f"{dtype} of shape (..., {module.in_features})"
    dims = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}[type(module)]  # type: ignore[index]
    return f"{dtype} of shape (N, {module.in_channels}, {dims})"  # type: ignore[attr-defined]


def describe_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
        return type(value).__name__
    parts = [one(v) for v in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) or "nothing"


@torch.no_grad()
def run_example(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``model(*args, **kwargs)``; raises :class:`ExampleInputsError` naming the first layer
    the inputs reached (or, if none, the model's first layer) and what it expected."""
    reached: list[tuple[str, nn.Module]] = []
    names = {id(m): n for n, m in model.named_modules()}

    def note(module: nn.Module, _inputs: Any) -> None:
        if not reached:
            reached.append((names.get(id(module), "?"), module))

    handles = [m.register_forward_pre_hook(note) for m in model.modules() if isinstance(m, _WEIGHTED)]
    try:
        return model(*args, **kwargs)
    except Exception as exc:
        first = reached[0] if reached else next(((n, m) for n, m in model.named_modules()
                                                  if isinstance(m, _WEIGHTED)), None)
        layer = (f"its first layer {first[0]} ({type(first[1]).__name__}) expects {expected_input(first[1])}"
                 if first is not None else "it has no Linear, Conv or Embedding layer")
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExampleInputsError(f"{NOT_FITTING}: {layer}, and got "
                                 f"{describe_inputs(args, kwargs)} ({type(exc).__name__}: {cause})") from None
    finally:
        for handle in handles:
            handle.remove()
