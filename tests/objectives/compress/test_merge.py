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


def test_ties_trims_elects_the_weighted_sign_and_drops_disagreeing_entries():
    from paretoml.objectives.compress.merge import MergeSettings, ties_tensors, trimmed

    base = torch.zeros(4)
    a = torch.tensor([1.0, -2.0, 0.1, 3.0])
    b = torch.tensor([2.0, 1.0, -0.5, -1.0])
    assert torch.equal(trimmed(a, 0.5), torch.tensor([0.0, -2.0, 0.0, 3.0]))
    # signs: entry 0 agree (+), 1: -2 vs +1 -> '-', 2: 0.1 vs -0.5 -> '-', 3: 3 vs -1 -> '+'
    assert torch.equal(ties_tensors(base, [a, b], [1.0, 1.0]), torch.tensor([3.0, -2.0, -0.5, 3.0]))
    # the coefficients weigh the election: b at 2.5x outvotes a on entry 1, not on entry 3
    assert torch.equal(ties_tensors(base, [a, b], [1.0, 2.5]), torch.tensor([6.0, 2.5, -1.25, 3.0]))
    assert torch.equal(ties_tensors(base + 1, [a + 1, b + 1], [0.0, 0.0]), base + 1)
    assert MergeSettings("ties", 0.5).density == 0.5


def test_a_norm_follows_the_layers_beside_it():
    from paretoml.objectives.compress.merge import leftover_coeffs

    coeffs = {"model.layers.0.self_attn.q_proj": (0.2, 0.4), "model.layers.0.mlp.up_proj": (0.4, 0.0),
              "model.layers.1.mlp.up_proj": (1.0, 1.0), "model.embed_tokens": (0.5, 0.25), "lm_head": (0.5, 0.25)}
    assert leftover_coeffs("model.layers.0.input_layernorm", coeffs, 2) == [0.30000000000000004, 0.2]
    assert leftover_coeffs("model.norm", coeffs, 2) == [0.5, 0.25]
    assert leftover_coeffs("norm", {}, 2) == [0.0, 0.0]
