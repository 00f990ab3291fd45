import json

import torch

from paretoml.objectives import measure
from paretoml.objectives.tasks import cache
from paretoml.objectives.tasks.digits import DigitsCNNTask, digits_splits


def test_splits_are_disjoint_stratified_and_fixed():
    a, b = digits_splits(), digits_splits()
    assert torch.equal(a.val_x, b.val_x)
    assert (len(a.train_x), len(a.val_x), len(a.test_x)) == (1078, 359, 360)
    assert set(a.val_y.tolist()) == set(range(10))


def test_training_is_deterministic_cached_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOML_CACHE_DIR", str(tmp_path))
    task = DigitsCNNTask(DigitsCNNTask.Options(epochs=3, seed=5))
    first = task.load(torch.device("cpu"))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".pt")
    assert measure.accuracy(first.model, first.val_inputs, first.val_labels) > 0.8
    weights = tmp_path / files[1]
    stamp = weights.stat().st_mtime_ns

    # a second load uses the cache: same weights, file untouched
    second = task.load(torch.device("cpu"))
    assert weights.stat().st_mtime_ns == stamp
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters()))

    # a corrupted file fails its hash check and is retrained to the very same weights
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    third = task.load(torch.device("cpu"))
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), third.model.parameters()))
    sidecar = json.loads((tmp_path / files[0]).read_text())
    assert sidecar["sha256"] == cache._sha256(weights)

    # different metadata (another seed) is another entry
    other = DigitsCNNTask(DigitsCNNTask.Options(epochs=3, seed=6)).load(torch.device("cpu"))
    assert len(list(tmp_path.iterdir())) == 4
    assert not torch.equal(other.model.conv1.weight, first.model.conv1.weight)
