import pytest
import torch
from torch import nn

from paretoml.objectives.compress.prune import prune_structured, prune_unstructured, unstructured_mask
from paretoml.objectives.tasks.digits import DigitsCNN
from paretoml.search_space.introspect import introspect


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.333, 0.5, 0.9, 0.95])
def test_unstructured_sparsity_is_exact(ratio):
    torch.manual_seed(0)
    layer = nn.Linear(37, 23)
    prune_unstructured(nn.Sequential(layer), {"0": ratio})
    zeros = int((layer.weight == 0).sum())
    assert zeros == round(ratio * layer.weight.numel())


def test_unstructured_removes_smallest_magnitudes_and_handles_ties():
    w = torch.tensor([[0.5, -0.1, 0.1, 2.0], [0.1, -3.0, 0.2, 0.05]])
    mask = unstructured_mask(w, 0.5)
    assert int((~mask).sum()) == 4
    assert mask[0, 3] and mask[1, 1] and mask[0, 0] and mask[1, 2]


def test_structured_pruning_shrinks_real_tensors_and_keeps_the_function():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(5, 1, 8, 8)
    links = {l.name: l.link for l in introspect(model, x) if l.link}
    # zero 4 channels of conv1 by hand: removing exactly them must not change the output
    with torch.no_grad():
        model.conv1.weight[[1, 5, 9, 13]] = 0
        model.conv1.bias[[1, 5, 9, 13]] = 0
    expected = model(x)
    prune_structured(model, {"conv1": 0.25}, links)
    assert model.conv1.weight.shape == (12, 1, 3, 3)
    assert model.conv2.weight.shape == (32, 12, 3, 3)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_structured_through_flatten_and_chained_layers():
    torch.manual_seed(1)
    model = DigitsCNN().eval()
    x = torch.randn(3, 1, 8, 8)
    links = {l.name: l.link for l in introspect(model, x) if l.link}
    prune_structured(model, {"conv1": 0.5, "conv2": 0.25, "fc1": 0.5}, links)
    assert model.conv1.out_channels == 8
    assert model.conv2.weight.shape == (24, 8, 3, 3)
    assert model.fc1.weight.shape == (32, 24 * 16)  # 16 spatial features per kept channel
    assert model.fc2.weight.shape == (10, 32)
    assert model(x).shape == (3, 10)


def test_structured_refuses_layers_without_a_single_consumer():
    model = DigitsCNN()
    links = {l.name: l.link for l in introspect(model, torch.zeros(1, 1, 8, 8)) if l.link}
    with pytest.raises(ValueError, match="fc2"):
        prune_structured(model, {"fc2": 0.5}, links)


def test_structured_with_batchnorm_slices_the_norm():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_()
    x = torch.randn(2, 3, 6, 6)
    links = {l.name: l.link for l in introspect(model, x) if l.link}
    prune_structured(model, {"0": 0.5}, links)
    assert model[1].num_features == 4 and model[1].running_mean.shape == (4,)
    assert model(x).shape == (2, 4, 4, 4)


def test_heads_are_pruned_in_blocks_with_their_siblings():
    """Blocks of rows (heads) ranked over the query, key and value together; the consumer's
    columns and a head-count attribute follow."""
    from paretoml.search_space.introspect import ChannelLink

    torch.manual_seed(0)
    model = nn.ModuleDict({"q": nn.Linear(6, 8), "k": nn.Linear(6, 8), "v": nn.Linear(6, 8), "o": nn.Linear(8, 6)})
    model.heads = 4
    with torch.no_grad():
        for name in ("q", "k", "v"):
            model[name].weight[2:4] *= 0.01  # head 1 is the weakest in every projection
    link = ChannelLink("o", block=2, siblings=("k", "v"), resize=(("", "heads", 2),))
    x = torch.randn(3, 6)
    kept_rows = [0, 1, 4, 5, 6, 7]
    expected = model["o"].weight[:, kept_rows].clone()
    prune_structured(model, {"q": 0.25}, {"q": link})
    assert all(model[n].weight.shape == (6, 6) for n in ("q", "k", "v"))
    assert model["o"].weight.shape == (6, 6) and torch.equal(model["o"].weight, expected)
    assert model.heads == 3
    assert model["o"](model["v"](x)).shape == (3, 6)
