"""Short fine-tuning after compression, honouring the trial's batch size and LR."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


#: ``loss(model, inputs, labels)`` of one minibatch: what a fine-tune minimises
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(inputs), labels)


def causal_lm_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of windows of token ids (``labels`` are the windows)."""
    logits = model(input_ids=inputs).logits
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


@dataclass(frozen=True)
class FinetuneData:
    """What a task's recovery fine-tune trains on.

    Args:
        inputs: the samples (row per sample), e.g. windows of token ids.
        labels: their targets, row for row (for a causal LM: the windows themselves).
        loss: the minibatch loss (:data:`LossFn`).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    loss: LossFn = classifier_loss


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


class Finetuner:
    """Fine-tuning that can stop and go on: ``run(n)`` takes ``n`` more steps with the same
    optimizer state and minibatch order, so running 25 + 25 + 50 steps is the same as 100
    (the rungs of early stopping look at the model between the runs).

    Deterministic for a given seed: the minibatch order comes from its own generator.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 settings: FinetuneSettings, masks: Mapping[str, torch.Tensor] | None = None,
                 loss: LossFn = classifier_loss) -> None:
        self.model = model
        self.inputs = inputs
        self.labels = labels
        self.settings = settings
        self.masks = masks or {}
        self.done = 0
        self._generator = torch.Generator().manual_seed(settings.seed)
        self._modules = dict(model.named_modules())
        self._optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self._loss = loss
        self._order = torch.randperm(len(inputs), generator=self._generator)
        self._cursor = 0

    def run(self, steps: int) -> nn.Module:
        """``steps`` more Adam steps; pruned weights stay zero (masks re-applied)."""
        model, size, n = self.model, self.settings.batch_size, len(self.inputs)
        model.train()
        for _ in range(steps):
            if self._cursor + size > n:
                self._order = torch.randperm(n, generator=self._generator)
                self._cursor = 0
            idx = self._order[self._cursor : self._cursor + size].to(self.inputs.device)
            self._cursor += size
            self._optimizer.zero_grad(set_to_none=True)
            self._loss(model, self.inputs[idx], self.labels[idx]).backward()
            self._optimizer.step()
            if self.masks:
                with torch.no_grad():
                    for name, mask in self.masks.items():
                        self._modules[name].weight.mul_(mask)  # type: ignore[union-attr]
        self.done += steps
        model.eval()
        return model


def finetune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    settings: FinetuneSettings,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Adam for ``settings.steps`` minibatches; pruned weights stay zero (masks re-applied)."""
    if settings.steps <= 0:
        return model
    return Finetuner(model, inputs, labels, settings, masks).run(settings.steps)
