import torch
from torch import nn

from paretoml.objectives.tasks.digits import DigitsCNN
from paretoml.search_space.introspect import group_layers, introspect


def test_digits_cnn_layers_params_and_macs():
    model = DigitsCNN()
    layers = {l.name: l for l in introspect(model, torch.zeros(4, 1, 8, 8))}
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]
    # hand counts: conv 3x3 with padding keeps 8x8; MACs per sample
    assert layers["conv1"].num_params == 16 * 9 + 16
    assert layers["conv1"].macs == 8 * 8 * 16 * 1 * 9
    assert layers["conv2"].macs == 8 * 8 * 32 * 16 * 9
    assert layers["fc1"].macs == 512 * 64
    assert layers["fc2"].weight_shape == (10, 64)
    # channel links: conv2 -> flatten(32 x 4 x 4) -> fc1 ; fc2 feeds the output
    assert layers["conv1"].link.consumer == "conv2"
    assert layers["conv2"].link.consumer == "fc1"
    assert layers["conv2"].link.features_per_channel == 16
    assert layers["fc1"].link.consumer == "fc2"
    assert not layers["fc2"].structured_ok


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        return self.head(x + self.block(x))


def test_residual_and_embedding_models():
    layers = {l.name: l for l in introspect(Residual(), torch.zeros(2, dtype=torch.long))}
    assert layers["emb"].kind == "embedding" and layers["emb"].macs == 0
    # block.0's output passes a norm and then an add: its channels cannot be removed alone
    assert not layers["block.0"].structured_ok
    assert layers["block.0"].num_params == 8 * 8 + 8


def test_norm_between_layers_is_recorded():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    first = introspect(model, torch.zeros(1, 3, 6, 6))[0]
    assert first.link.consumer == "3" and first.link.norms == ("1",)


def test_grouping_per_layer_block_and_shared():
    names = ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "fc"]
    assert group_layers(names, "layer") == {n: [n] for n in names}
    assert group_layers(names, "block") == {
        "layer1.0": ["layer1.0.conv1", "layer1.0.conv2"], "layer1.1": ["layer1.1.conv1"], "fc": ["fc"]}
    assert group_layers(names, "block", block_depth=1) == {"layer1": names[:3], "fc": ["fc"]}
    assert group_layers(names, "shared") == {"all": names}


class Untraceable(nn.Module):
    """A data-dependent branch and keyword inputs: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        if bool(mask.sum() > 0):
            h = self.down(torch.relu(self.up(h)))
        return h.mean(dim=1)


def test_untraceable_models_are_walked_with_hooks():
    from paretoml.search_space.introspect import ChannelLink

    model = Untraceable()
    example = {"ids": torch.zeros(3, 5, dtype=torch.long), "mask": torch.ones(3, 5)}
    link = ChannelLink("down")
    layers = {l.name: l for l in introspect(model, example, links={"up": link})}
    assert list(layers) == ["emb", "up", "down"]  # forward order
    assert layers["up"].macs == 5 * 16 * 8  # 5 tokens per sample
    assert layers["down"].macs == 5 * 4 * 16
    assert layers["up"].link == link and not layers["down"].structured_ok
