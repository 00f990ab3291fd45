"""A :class:`TaskBundle` (classifier, splits in memory) seen as a general :class:`ModelBundle`:
its accuracy and fidelity become a scorer like any task's own metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from paretoml.objectives.train import FinetuneData

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
    uncompressed model's predictions. A trial scores only the metrics asked for (accuracy
    needs labels a task may lack).

    Args:
        labelled: whether the validation split has labels; without, only fidelity is scorable.
    """

    metrics = CLASSIFIER_METRICS
    scores_together = False

    def __init__(self, labelled: bool = True) -> None:
        self.labelled = labelled

    def scorable(self) -> tuple[str, ...]:
        return ("accuracy", "fidelity") if self.labelled else ("fidelity",)

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


def _test_accuracy(test: Split) -> Callable[[nn.Module], dict[str, float]]:
    """Each trial's accuracy on the labelled test split, kept as an attribute."""

    def held_out(model: nn.Module) -> dict[str, float]:
        return {"test_accuracy": ClassifierScorer().score(model, test, None, ["accuracy"])["accuracy"]}

    return held_out


def classifier_bundle(bundle: TaskBundle) -> ModelBundle:
    """The general form of a classifier bundle (its validation split also calibrates)."""
    validation = _split(bundle.val_inputs, bundle.val_labels, "validation")
    assert validation is not None
    test = _split(bundle.test_inputs, bundle.test_labels, "test")
    inputs, labels = bundle.train_inputs, bundle.train_labels
    return ModelBundle(
        model=bundle.model,
        example=ExampleInputs((bundle.example_input,)),
        validation=validation,
        scorer=ClassifierScorer(labelled=bundle.val_labels is not None),
        calibration=None,
        test=test,
        info=bundle.info,
        checkpoints=bundle.checkpoints,
        finetune=FinetuneData(inputs, labels) if inputs is not None and labels is not None else None,
        example_cuts=True,
        held_out=_test_accuracy(test) if test is not None and bundle.test_labels is not None else None,
    )


def as_model_bundle(loaded: TaskBundle | ModelBundle) -> ModelBundle:
    """What a task's ``load`` returned, in the one form the evaluator sees."""
    return classifier_bundle(loaded) if isinstance(loaded, TaskBundle) else loaded
