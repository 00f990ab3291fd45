"""Example inputs that do not fit the model: one line naming the first layer they reach and
what it expects, and no traceback printed by torch.fx's shape propagation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paretoml.search_space.example_fit import ExampleInputsError
from paretoml.search_space.introspect import introspect


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


@pytest.mark.parametrize(("model", "example", "expected"), [
    (nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2)), torch.randn(8, 20, dtype=torch.float64),
     "its first layer 0 (Linear) expects float32 of shape (..., 20), and got float64 (8, 20)"),
    (nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2)), torch.randn(8, 12),
     "its first layer 0 (Linear) expects float32 of shape (..., 20), and got float32 (8, 12)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), torch.randn(2, 3, 8, 8),
     "its first layer 0 (Conv2d) expects float32 of shape (N, 1, H, W), and got float32 (2, 3, 8, 8)"),
    (Tagger(), {"ids": torch.rand(2, 5)},
     "its first layer embed (Embedding) expects integer (torch.long) indices below 50, any shape, and got "
     "ids=float32 (2, 5)"),
])
def test_inputs_that_do_not_fit_are_one_line_naming_the_first_layer(model, example, expected, capfd):
    with pytest.raises(ExampleInputsError) as error:
        introspect(model, example)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"the example inputs do not fit the model: {expected} ("), message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out  # torch.fx's ShapeProp prints one


def test_inputs_that_fit_are_introspected_as_before():
    layers = introspect(nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2)), torch.randn(8, 20))
    assert [(layer.name, layer.weight_shape) for layer in layers] == [("0", (16, 20)), ("2", (2, 16))]
    assert layers[0].link is not None  # still traced by torch.fx: the channel link is found
