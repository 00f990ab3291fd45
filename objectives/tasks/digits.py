"""``digits-cnn``: a small CNN on scikit-learn's bundled 8x8 digits (1,797 images).

The data ship inside scikit-learn, so nothing is downloaded. The model is trained on first
use, deterministically from the seed, and cached (see :mod:`.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from paretoml.objectives.tasks.base import Task, TaskBundle, TaskOptions
from paretoml.objectives.tasks.cache import StateDict, cached_or_trained

#: Bump when the architecture or the training recipe changes: old cache entries are ignored.
RECIPE_VERSION = 1


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16, hidden: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * 16, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(self.flatten(x)))
        return self.fc2(x)


@dataclass(frozen=True)
class DigitsSplits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def digits_splits(seed: int = 0) -> DigitsSplits:
    """Stratified 60/20/20 train/validation/test split; search scores on validation."""
    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    t = torch.from_numpy
    return DigitsSplits(t(x_train), t(y_train), t(x_val), t(y_val), t(x_test), t(y_test))


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 2e-3,
    batch_size: int = 64,
) -> StateDict:
    """Plain Adam training on CPU with a seeded generator: same seed, same weights."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    return model.state_dict()


def build_model(width: int, hidden: int, seed: int) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN(width=width, hidden=hidden)


class DigitsCNNOptions(TaskOptions):
    seed: int = Field(0, ge=0, description="seed of the weights' initialisation and training")
    epochs: int = Field(30, ge=1, le=500)
    width: int = Field(16, ge=1, le=256, description="channels of the first convolution")
    hidden: int = Field(64, ge=1, le=4096, description="units of the hidden dense layer")
    latency_batch: int = Field(32, ge=1, le=1024, description="batch of the example input")


class DigitsCNNTask(Task):
    name = "digits-cnn"
    summary = "2-conv + 2-dense CNN on scikit-learn's 8x8 digits; accuracy on a held-out split"
    Options = DigitsCNNOptions

    def load(self, device: torch.device) -> TaskBundle:
        opts: DigitsCNNOptions = self.options  # type: ignore[assignment]
        splits = digits_splits()
        meta = {"recipe": RECIPE_VERSION, "seed": opts.seed, "epochs": opts.epochs,
                "width": opts.width, "hidden": opts.hidden}
        key = f"digits-cnn-s{opts.seed}-e{opts.epochs}-w{opts.width}-h{opts.hidden}-r{RECIPE_VERSION}"

        def train() -> StateDict:
            model = build_model(opts.width, opts.hidden, opts.seed)
            return train_classifier(model, splits.train_x, splits.train_y, epochs=opts.epochs, seed=opts.seed)

        model = DigitsCNN(opts.width, opts.hidden)
        model.load_state_dict(cached_or_trained(key, meta, train))
        return _bundle(model.to(device).eval(), splits, device, opts.latency_batch)


def _bundle(model: nn.Module, splits: DigitsSplits, device: torch.device, latency_batch: int,
            checkpoints: list[StateDict] | None = None) -> TaskBundle:
    def to(t: torch.Tensor) -> torch.Tensor:
        return t.to(device)

    return TaskBundle(
        model=model,
        example_input=to(splits.val_x[:latency_batch]),
        val_inputs=to(splits.val_x),
        val_labels=to(splits.val_y),
        train_inputs=to(splits.train_x),
        train_labels=to(splits.train_y),
        test_inputs=to(splits.test_x),
        test_labels=to(splits.test_y),
        checkpoints=[{k: to(v) for k, v in c.items()} for c in (checkpoints or [])],
    )
