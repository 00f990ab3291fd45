"""``digits-merge``: merge specialists of one CNN back into a model that knows every digit.

A base CNN is pre-trained briefly on all ten digits; each specialist is fine-tuned from it
on its own subset of classes (by default 0-4 and 5-9) until it forgets the rest. Per-layer
merge coefficients blend the specialists' weights with the base (task arithmetic); the
objective is accuracy on all ten classes.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from paretoml.objectives.tasks.base import Task, TaskBundle, TaskOptions
from paretoml.objectives.tasks.cache import StateDict, cached_or_trained
from paretoml.objectives.tasks.digits import (
    RECIPE_VERSION,
    DigitsCNN,
    _bundle,
    build_model,
    digits_splits,
    train_classifier,
)


class DigitsMergeOptions(TaskOptions):
    seed: int = Field(0, ge=0)
    base_epochs: int = Field(2, ge=1, le=100, description="epochs of the weak pre-training")
    specialist_epochs: int = Field(15, ge=1, le=200)
    subsets: list[list[int]] = Field(default_factory=lambda: [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    latency_batch: int = Field(32, ge=1, le=1024)

    @field_validator("subsets")
    @classmethod
    def _valid_subsets(cls, value: list[list[int]]) -> list[list[int]]:
        if not value:
            raise ValueError("needs at least one class subset")
        for subset in value:
            if not subset or any(not 0 <= c <= 9 for c in subset):
                raise ValueError("each subset must be a non-empty list of digits 0..9")
        return value


class DigitsMergeTask(Task):
    name = "digits-merge"
    summary = "task arithmetic of digit-subset specialists of one CNN; accuracy on all digits"
    Options = DigitsMergeOptions

    def load(self, device: torch.device) -> TaskBundle:
        opts: DigitsMergeOptions = self.options  # type: ignore[assignment]
        splits = digits_splits()
        base_meta = {"recipe": RECIPE_VERSION, "seed": opts.seed, "epochs": opts.base_epochs, "role": "base"}

        def train_base() -> StateDict:
            model = build_model(16, 64, opts.seed)
            return train_classifier(model, splits.train_x, splits.train_y, epochs=opts.base_epochs, seed=opts.seed)

        base = cached_or_trained(f"digits-merge-base-s{opts.seed}-e{opts.base_epochs}-r{RECIPE_VERSION}",
                                 base_meta, train_base)
        specialists: list[StateDict] = []
        for i, subset in enumerate(opts.subsets):
            meta = {**base_meta, "role": "specialist", "subset": sorted(subset), "epochs": opts.specialist_epochs,
                    "base_epochs": opts.base_epochs}
            key = (f"digits-merge-spec-s{opts.seed}-b{opts.base_epochs}-e{opts.specialist_epochs}-"
                   f"c{''.join(map(str, sorted(subset)))}-r{RECIPE_VERSION}")

            def train_specialist(subset: list[int] = subset, i: int = i) -> StateDict:
                model = DigitsCNN()
                model.load_state_dict(base)
                keep = torch.isin(splits.train_y, torch.tensor(subset))
                return train_classifier(model, splits.train_x[keep], splits.train_y[keep],
                                        epochs=opts.specialist_epochs, seed=opts.seed + 1 + i)

            specialists.append(cached_or_trained(key, meta, train_specialist))
        model = DigitsCNN()
        model.load_state_dict(base)
        return _bundle(model.to(device).eval(), splits, device, opts.latency_batch, checkpoints=specialists)
