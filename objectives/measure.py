"""Measurements of one compressed model: accuracy, fidelity, latency and memory.

Byte accounting follows the one packed format of :mod:`paretoml.search_space.model_bytes`
(the budget's formula too), applied here to the non-zeros of the real tensors.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from paretoml.objectives.device_lock import exclusive_timing, gpu_work
from paretoml.objectives.tasks.base import ExampleInputs
from paretoml.search_space.introspect import layer_weight
from paretoml.search_space.model_bytes import FP16_SCALE_BYTES, packed_weight_bits, packed_weight_bytes  # noqa: F401 (re-exported)


def packed_tensor_bytes(weight: torch.Tensor, bits: int) -> int:
    """Packed bytes of one weight tensor as it is: its zeros (pruned, or rounded to zero)
    are counted from the tensor itself."""
    nnz = int(torch.count_nonzero(weight).item())
    return packed_weight_bytes(weight.numel(), nnz, weight.shape[0], bits)


def packed_model_bytes(model: nn.Module, bits: Mapping[str, int]) -> int:
    """Bytes of ``model`` in the packed format; ``bits`` maps layer names to bitwidths.

    Zeros left in a weight by pruning are counted from the tensor itself, so this measures
    what the compressed model really holds.
    """
    total = 0
    seen: set[int] = set()
    weights = [layer_weight(model, name) for name in bits]
    # every weight's nonzeros in one transfer: one host sync per model, not one per layer
    nonzeros = torch.stack([torch.count_nonzero(w) for w in weights]).tolist() if weights else []
    for weight, nnz, b in zip(weights, nonzeros, bits.values()):
        seen.add(id(weight))
        total += packed_weight_bytes(weight.numel(), int(nnz), weight.shape[0], b)
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen or not tensor.is_floating_point():
            continue
        seen.add(id(tensor))
        total += 4 * tensor.numel()
    return total


def dense_fp32_bytes(model: nn.Module) -> int:
    return sum(4 * t.numel() for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point())


@torch.inference_mode()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, inputs).argmax(dim=1) == labels).float().mean().item())


def fidelity(model: nn.Module, inputs: torch.Tensor, reference_logits: torch.Tensor) -> float:
    """Top-1 agreement with the uncompressed model: accuracy where labels are missing."""
    return float((predict(model, inputs).argmax(dim=1) == reference_logits.argmax(dim=1)).float().mean().item())


@dataclass(frozen=True)
class LatencySettings:
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 50
    threads: int = 1


def example_inputs(example: torch.Tensor | ExampleInputs, batch_size: int | None = None) -> ExampleInputs:
    """A tensor example is cut to ``batch_size``; an ExampleInputs is used as the task made it."""
    if isinstance(example, ExampleInputs):
        return example
    return ExampleInputs((example if batch_size is None else example[:batch_size],))


@torch.inference_mode()
def latency_ms(model: nn.Module, example: torch.Tensor | ExampleInputs, settings: LatencySettings) -> float:
    """Median time of one forward pass, after warm-up, with a fixed thread count.

    On CUDA each pass is timed by CUDA events on the stream (the device's time, launches
    included), and the timed passes hold the GPU's timing lock
    (:mod:`paretoml.objectives.device_lock`), so workers sharing the GPU never time each
    other's kernels. On CPU, wall time of each pass.
    """
    model.eval()
    batch = example_inputs(example, settings.batch_size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        if batch.is_cuda:
            with torch.cuda.device(batch.device):  # events on its stream
                times = _cuda_times(model, batch, settings)
        else:
            for _ in range(settings.warmup):
                batch(model)
            times = []
            for _ in range(settings.repeats):
                start = time.perf_counter()
                batch(model)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    return statistics.median(times)


def _cuda_times(model: nn.Module, batch: ExampleInputs, settings: LatencySettings) -> list[float]:
    """Per-pass milliseconds between two CUDA events. The device is idle when each pass
    starts (a synchronisation before it), so a pass's launches are in its time, as they are
    for a caller waiting for one answer; queued passes would hide them.

    The warm-up passes but the last run beside other workers' GPU work; the last warm-up and
    the timed passes hold the GPU alone (timing lock). A CUDA graph is captured on the
    model's second call, so with 3 or more warm-up passes the capture is among the shared
    ones; with 2 it is the exclusive warm-up, with fewer the first timed pass."""
    with gpu_work(batch.device):  # its end waits for these passes; each timed one starts from an idle device
        for _ in range(settings.warmup - 1):
            batch(model)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(settings.repeats)]
    with exclusive_timing(batch.device):
        if settings.warmup > 0:
            batch(model)
        for start, end in events:
            torch.cuda.synchronize(batch.device)
            start.record()
            batch(model)
            end.record()
        torch.cuda.synchronize(batch.device)
    return [start.elapsed_time(end) for start, end in events]


@torch.inference_mode()
def peak_memory_bytes(model: nn.Module, example: torch.Tensor | ExampleInputs) -> int:
    """Peak bytes allocated during one forward pass, parameters included.

    CUDA: the allocator's high-water mark. CPU: PyTorch's profiler records every
    allocation and free of the pass; the running sum's maximum is the peak.
    """
    model.eval()
    example = example_inputs(example)
    resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if example.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(example.device)
        base = torch.cuda.memory_allocated(example.device)
        example(model)
        torch.cuda.synchronize()
        return resident + torch.cuda.max_memory_allocated(example.device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        example(model)
    # Allocations are charged to the op that made them (self usage, so nested ops are not
    # counted twice); frees of tensors that outlive their op appear as "[memory]" events.
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return resident + peak
