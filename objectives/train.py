"""Short fine-tuning after compression, honouring the trial's batch size and LR."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


def finetune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    settings: FinetuneSettings,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Adam for ``settings.steps`` minibatches; pruned weights stay zero (masks re-applied).

    Deterministic for a given seed: the minibatch order comes from its own generator.
    """
    if settings.steps <= 0:
        return model
    generator = torch.Generator().manual_seed(settings.seed)
    modules = dict(model.named_modules())
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(inputs)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for _ in range(settings.steps):
        if cursor + settings.batch_size > n:
            order = torch.randperm(n, generator=generator)
            cursor = 0
        idx = order[cursor : cursor + settings.batch_size].to(inputs.device)
        cursor += settings.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs[idx]), labels[idx]).backward()
        optimizer.step()
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    modules[name].weight.mul_(mask)  # type: ignore[union-attr]
    model.eval()
    return model
