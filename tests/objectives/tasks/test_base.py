"""The task API's pieces for real models: streamed splits, example inputs, calling conventions."""

from __future__ import annotations

import torch
from torch import nn

from paretoml.objectives.tasks.base import ExampleInputs, Split, call_model, first_tensor


def test_a_split_streams_from_a_generator_and_restarts():
    made: list[int] = []

    def batches():
        for i in range(3):
            made.append(i)  # made only when reached
            yield {"x": torch.full((2,), float(i))}

    split = Split(batches, size=6)
    stream = iter(split)
    next(stream)
    assert made == [0]
    assert [float(b["x"][0]) for b in split] == [0.0, 1.0, 2.0]  # a second pass starts again
    chunks = list(Split.of_tensors(torch.arange(5), torch.arange(5) * 2, batch_size=2))
    assert [len(x) for x, _ in chunks] == [2, 2, 1] and torch.equal(chunks[2][1], torch.tensor([8]))


class Adder(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return a if b is None else a + b


def test_batches_of_any_structure_call_the_model():
    a, b = torch.ones(2), torch.full((2,), 2.0)
    model = Adder()
    assert torch.equal(call_model(model, a), a)
    assert torch.equal(call_model(model, (a, b)), a + b)
    assert torch.equal(call_model(model, {"a": a, "b": b}), a + b)
    example = ExampleInputs.of({"a": torch.ones(4, 3), "b": torch.ones(4, 3)})
    assert example.batch_size == 4 and example(model).sum() == 24
    assert ExampleInputs.of(a).args == (a,) and ExampleInputs.of((a, b)).args == (a, b)
    assert first_tensor({"last_hidden_state": a}) is a and first_tensor((None, b)) is b


def test_the_head_of_a_split_cuts_its_last_batch_and_keeps_the_structure():
    made: list[int] = []

    def batches():
        for i in range(4):
            made.append(i)
            yield {"input_ids": torch.full((3, 5), i), "attention_mask": torch.ones(3, 5)}

    split = Split(batches, size=12)
    head = split.head(7)
    got = list(head)
    assert [b["input_ids"].shape[0] for b in got] == [3, 3, 1]
    assert [b["attention_mask"].shape for b in got][-1] == (1, 5)
    assert int(got[-1]["input_ids"][0, 0]) == 2 and head.size == 7
    assert made == [0, 1, 2]  # the stream stops at the prefix: the 4th batch is never made
    assert [len(b["input_ids"]) for b in head] == [3, 3, 1]  # re-iterable like any split
    assert split.count() == 12 and Split(batches).count() == 12  # counted when no size is given
    pairs = list(Split.of_tensors(torch.arange(10), torch.arange(10) * 2, batch_size=4).head(5))
    assert [len(x) for x, _ in pairs] == [4, 1] and torch.equal(pairs[1][1], torch.tensor([8]))


def test_a_spread_of_a_split_samples_every_batch_in_proportion():
    """What evaluation rungs score: for a split sorted by length (like lengths batched
    together), samples from every batch, not the first (shortest) ones."""
    lengths = sorted([3, 9, 4, 12, 7, 5, 11, 6, 8, 10, 2, 1])  # 12 sentences, sorted as the encoders do
    split = Split.of_tensors(torch.tensor(lengths), batch_size=4)
    spread = split.spread(6)
    got = torch.cat(list(spread))
    assert spread.size == 6 and len(got) == 6
    assert [len(b) for b in spread] == [2, 2, 2]  # half of each batch of 4
    assert got.tolist() == [1, 2, 5, 6, 9, 10]  # short, middle and long ones alike
    assert torch.cat(list(split.head(6))).tolist() == [1, 2, 3, 4, 5, 6]  # a head is only the shortest
    uneven = Split.of_tensors(torch.arange(10), batch_size=4)  # batches of 4, 4, 2
    assert [len(b) for b in uneven.spread(5)] == [2, 2, 1] and uneven.spread(5).size == 5
    assert sum(len(b) for b in uneven.spread(10)) == 10
