"""``synthetic``: a tiny real model with controllable cost and faults.

For measuring the system rather than a model: dispatch overhead (``busy_ms: 0``, a trial
is one small forward pass), parallel throughput (``busy_ms`` of CPU work per trial), and
fault handling: ``faults`` maps trial numbers to a fault injected into that trial (raise
an exception, exit the worker process, or crash it with a segmentation fault).
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from paretoml.objectives.tasks.base import Task, TaskBundle, TaskOptions
from paretoml.search_space.space import TrialConfig

class SyntheticOptions(TaskOptions):
    seed: int = Field(0, ge=0)
    width: int = Field(32, ge=1, le=4096)
    busy_ms: float = Field(0.0, ge=0, le=60000, description="CPU time burnt by every trial")
    faults: dict[int, Literal["raise", "exit", "segfault"]] = Field(
        default_factory=dict, description="trial number -> fault to inject (testing the service)"
    )
    latency_batch: int = Field(8, ge=1, le=1024)


class SyntheticTask(Task):
    name = "synthetic"
    summary = "a small random MLP scored by fidelity; trial cost and faults set by options"
    Options = SyntheticOptions

    def load(self, device: torch.device) -> TaskBundle:
        opts: SyntheticOptions = self.options  # type: ignore[assignment]
        generator = torch.Generator().manual_seed(opts.seed)
        torch.manual_seed(opts.seed)
        model = nn.Sequential(nn.Linear(16, opts.width), nn.ReLU(), nn.Linear(opts.width, 4)).to(device).eval()
        inputs = torch.randn(256, 16, generator=generator).to(device)
        return TaskBundle(model=model, example_input=inputs[: opts.latency_batch], val_inputs=inputs, val_labels=None)

    def on_trial(self, config: TrialConfig, number: int) -> None:
        opts: SyntheticOptions = self.options  # type: ignore[assignment]
        if opts.busy_ms:
            burn_cpu(opts.busy_ms / 1000)
        fault = opts.faults.get(number, "none")
        if fault == "raise":
            raise RuntimeError("synthetic fault: this trial raises")
        if fault == "exit":
            os._exit(13)
        if fault == "segfault":
            ctypes.string_at(0)


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time (not wall time) on arithmetic."""
    start = time.thread_time()
    x = 1.0
    while time.thread_time() - start < seconds:
        for _ in range(10000):
            x = x * 1.0000001 + 1e-9
