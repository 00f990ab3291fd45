import torch

from paretoml.objectives.compress.merge import merge_state_dicts, merge_tensors
from paretoml.objectives.tasks.digits import DigitsCNN


def _states(n):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(DigitsCNN().state_dict())
    return out


def test_coefficients_zero_and_one_give_the_endpoints_exactly():
    base, a, b = _states(3)
    layers = ["conv1", "conv2", "fc1", "fc2"]
    at_base = merge_state_dicts(base, [a, b], {l: (0.0, 0.0) for l in layers})
    at_a = merge_state_dicts(base, [a, b], {l: (1.0, 0.0) for l in layers})
    at_b = merge_state_dicts(base, [a, b], {l: (0.0, 1.0) for l in layers})
    for key in base:
        assert torch.equal(at_base[key], base[key])
        assert torch.equal(at_a[key], a[key])
        assert torch.equal(at_b[key], b[key])


def test_two_checkpoint_interpolation_and_task_arithmetic():
    base, a, b = (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0]), torch.tensor([1.0, 6.0]))
    assert torch.allclose(merge_tensors(base, [a], [0.25]), torch.tensor([1.5, 2.0]))
    # task vectors a-base=(2,0) and b-base=(0,4), added at 0.5 each
    assert torch.allclose(merge_tensors(base, [a, b], [0.5, 0.5]), torch.tensor([2.0, 4.0]))


def test_per_layer_coefficients_apply_to_their_layer_only():
    base, a = _states(2)
    merged = merge_state_dicts(base, [a], {"conv1": (1.0,), "conv2": (0.0,), "fc1": (0.0,), "fc2": (0.0,)})
    assert torch.equal(merged["conv1.weight"], a["conv1.weight"])
    assert torch.equal(merged["conv1.bias"], a["conv1.bias"])
    assert torch.equal(merged["fc1.weight"], base["fc1.weight"])
