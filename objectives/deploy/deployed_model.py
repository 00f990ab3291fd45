"""The deployed model's wrapper: the device's compute dtype at its edges and, on CUDA, the
forward pass replayed as one CUDA graph (as deployed GPU models are served)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch import nn


class DeployedModel(nn.Module):
    """Runs ``inner`` in the device's compute dtype: float inputs are cast on the way in,
    float outputs back to fp32 on the way out (metrics see the same dtype everywhere).

    On CUDA, inference calls repeating one set of input shapes run as a CUDA graph replay,
    as deployed GPU models are served: one launch for the whole forward pass, so the latency
    is the kernels' and not Python's. Inputs are any structure of tensors (positional or
    keyword: a Hugging Face model's ``input_ids`` and ``attention_mask``). A graph is
    captured on the second call with the same shapes (the first warms up); a model that
    cannot be captured (an op that waits for the host) runs eagerly.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, graphs: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.graphs = graphs
        self._graph: _Graph | None = None
        self._last_key: object = None
        self._uncapturable: set[object] = set()

    def _cast_in(self, value: object) -> object:
        return value.to(self.dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    @staticmethod
    def _cast_out(out: object) -> object:
        if isinstance(out, torch.Tensor):
            return out.to(torch.float32) if out.is_floating_point() else out
        if isinstance(out, dict):  # e.g. a Hugging Face ModelOutput: its float tensors, in place
            for key, value in list(out.items()):
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    out[key] = value.to(torch.float32)
        return out

    def _eager(self, *args: object, **kwargs: object) -> object:
        out = self.inner(*(self._cast_in(a) for a in args), **{k: self._cast_in(v) for k, v in kwargs.items()})
        return self._cast_out(out)

    def forward(self, *args: object, **kwargs: object) -> object:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        if not (self.graphs and tensors and all(t.is_cuda for t in tensors) and torch.is_inference_mode_enabled()):
            return self._eager(*args, **kwargs)
        key = _graph_key(spec, leaves)
        if self._graph is not None and self._graph.key == key:
            return self._graph.replay(tensors)
        if key == self._last_key and key not in self._uncapturable:
            try:
                self._graph = self._capture(key, leaves, spec)
                return self._graph.replay(tensors)
            except Exception:  # an op that syncs with the host or is not capturable
                self._graph = None
                self._uncapturable.add(key)
        self._last_key = key
        return self._eager(*args, **kwargs)

    def _capture(self, key: object, leaves: list[object], spec: pytree.TreeSpec) -> _Graph:
        """Capture one forward pass on static copies of the inputs (after two warm-up passes
        on a side stream, as CUDA graph capture requires)."""
        self._graph = None  # one graph at a time: its memory pool is freed with it
        static = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        args, kwargs = pytree.tree_unflatten(static, spec)
        device = next(leaf for leaf in static if isinstance(leaf, torch.Tensor)).device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._eager(*args, **kwargs)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._eager(*args, **kwargs)
        return _Graph(key, graph, [leaf for leaf in static if isinstance(leaf, torch.Tensor)], out)


@dataclass
class _Graph:
    """A captured forward pass: the inputs it reads, the outputs it writes."""

    key: object
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: object

    def replay(self, tensors: list[torch.Tensor]) -> object:
        for static, value in zip(self.inputs, tensors):
            static.copy_(value)
        self.graph.replay()
        # the caller gets its own tensors: the next replay overwrites the static outputs
        return pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, self.output)


def _graph_key(spec: pytree.TreeSpec, leaves: list[object]) -> object:
    """Inputs that can share a graph: the same structure, tensor shapes and dtypes, and equal
    non-tensor values."""
    described = tuple(("tensor", tuple(leaf.shape), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor)
                      else ("value", repr(leaf)) for leaf in leaves)
    return str(spec), described

