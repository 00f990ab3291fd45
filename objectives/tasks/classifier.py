"""A :class:`TaskBundle` (classifier, splits in memory) seen as a general :class:`ModelBundle`:
its accuracy and fidelity become a scorer like any task's own metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from paretoml.objectives.tasks.base import (
    CLASSIFIER_METRICS,
    ExampleInputs,
    ModelBundle,
    Scorer,
    Split,
    TaskBundle,
)

#: Batch size of the evaluation passes (as :func:`paretoml.objectives.measure.predict`).
EVAL_BATCH = 512


@torch.inference_mode()
def _logits_and_labels(model: nn.Module, split: Split) -> tuple[torch.Tensor, torch.Tensor | None]:
    model.eval()
    logits, labels = [], []
    for batch in split:
        inputs, target = batch if isinstance(batch, tuple) else (batch, None)
        logits.append(model(inputs))
        if target is not None:
            labels.append(target)
    return torch.cat(logits), (torch.cat(labels) if labels else None)


class ClassifierScorer(Scorer):
    """Top-1 accuracy against the split's labels, and top-1 agreement (fidelity) with the
    uncompressed model's predictions."""

    metrics = CLASSIFIER_METRICS

    def reference(self, model: nn.Module, split: Split) -> Any:
        return _logits_and_labels(model, split)[0].argmax(dim=1)

    def score(self, model: nn.Module, split: Split, reference: Any, names: Sequence[str]) -> dict[str, float]:
        logits, labels = _logits_and_labels(model, split)
        predicted = logits.argmax(dim=1)
        values: dict[str, float] = {}
        for name in names:
            if name == "accuracy":
                if labels is None:
                    raise ValueError("objective 'accuracy' needs labels; this task has none, use 'fidelity'")
                values[name] = float((predicted == labels).float().mean().item())
            elif name == "fidelity":
                values[name] = float((predicted == reference).float().mean().item())
        return values


def _split(inputs: torch.Tensor | None, labels: torch.Tensor | None, description: str) -> Split | None:
    if inputs is None:
        return None
    tensors = (inputs,) if labels is None else (inputs, labels)
    return Split.of_tensors(*tensors, batch_size=EVAL_BATCH, description=description)


def classifier_bundle(bundle: TaskBundle) -> ModelBundle:
    """The general form of a classifier bundle (its validation split also calibrates)."""
    validation = _split(bundle.val_inputs, bundle.val_labels, "validation")
    assert validation is not None
    return ModelBundle(
        model=bundle.model,
        example=ExampleInputs((bundle.example_input,)),
        validation=validation,
        scorer=ClassifierScorer(),
        calibration=None,
        test=_split(bundle.test_inputs, bundle.test_labels, "test"),
        info=bundle.info,
    )
