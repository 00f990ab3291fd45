import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from paretoml.search_space.knobs import (
    BatchSizeKnob,
    BitwidthKnob,
    CategoricalKnob,
    FloatKnob,
    IntKnob,
    LearningRateKnob,
    MergeKnob,
    PruneKnob,
)
from paretoml.search_space.space import JointSpace, TrialConfig


@pytest.fixture(scope="module")
def layers(digits_evaluator):
    return digits_evaluator.layers


def full_space(layers):
    knobs = [
        BitwidthKnob(choices=[2, 4, 8, 16]),
        PruneKnob(method="structured", high=0.75, step=0.25),
        MergeKnob(group="shared"),
        BatchSizeKnob(choices=[16, 64]),
        LearningRateKnob(base_lr=0.01, base_lr_range=(1e-4, 1e-1), base_batch=16, rule="linear"),
        FloatKnob(name="wd", low=1e-6, high=1e-2, log=True),
        IntKnob(name="steps", low=0, high=100, step=10),
        CategoricalKnob(name="opt", choices=["adam", "sgd", "lion"]),
    ]
    return JointSpace(knobs, layers, n_checkpoints=2)


def test_knobs_become_named_distributions(layers):
    space = full_space(layers)
    dists = space.distributions
    assert dists["bits:conv1"] == CategoricalDistribution([2, 4, 8, 16])
    assert dists["prune:conv1"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert "prune:fc2" not in dists  # the output layer cannot lose channels
    assert {"merge0:all", "merge1:all"} <= set(dists)
    assert dists["steps"] == IntDistribution(0, 100, step=10)
    assert dists["base_lr"].log
    assert space.notes and "fc2" in space.notes[0]


def test_suggest_expands_groups_to_layers(layers):
    space = full_space(layers)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    config = space.suggest(study.ask())
    assert set(config.bits) == {"conv1", "conv2", "fc1", "fc2"}
    assert set(config.prune) == {"conv1", "conv2", "fc1"}
    assert set(config.prune_method.values()) == {"structured"}
    # one shared pair of coefficients copied to every layer
    assert len({config.merge[name] for name in config.merge}) == 1
    assert config.batch_size in (16, 64)
    assert config.learning_rate == pytest.approx(
        study.trials[0].params["base_lr"] * config.batch_size / 16
    )
    assert set(config.hparams) == {"wd", "steps", "opt"}


def test_params_vector_params_round_trip(layers):
    space = full_space(layers)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    for _ in range(50):
        trial = study.ask()
        space.suggest(trial)
        params = trial.params
        vector = space.encode(params)
        assert vector.shape == (space.vector_size,)
        assert np.all((vector >= 0) & (vector <= 1))
        decoded = space.decode(vector)
        assert decoded.keys() == params.keys()
        for key, value in params.items():
            if isinstance(value, float):
                assert decoded[key] == pytest.approx(value, rel=1e-9, abs=1e-12)
            else:
                assert decoded[key] == value
        study.tell(trial, 0.0)


def test_one_hot_for_names_and_ordinal_for_numbers(layers):
    space = JointSpace([CategoricalKnob(name="opt", choices=["a", "b", "c"]), BitwidthKnob(choices=[2, 4, 8],
                        group="shared")], layers)
    assert space.vector_size == 3 + 1
    assert list(space.encode({"opt": "b", "bits:all": 4})) == [0.0, 1.0, 0.0, 0.5]
    assert space.decode(np.array([0.1, 0.2, 0.9, 0.8])) == {"opt": "c", "bits:all": 8}


def test_config_dict_round_trip(layers):
    space = full_space(layers)
    config = space.config_from_params(space.uniform_params(bits=4, prune=0.25, merge=0.5))
    assert TrialConfig.from_dict(config.to_dict()) == config
    assert set(config.bits.values()) == {4}
    assert config.merge["fc1"] == (0.5, 0.5)


def test_invalid_combinations_are_refused(layers):
    with pytest.raises(ValueError, match="needs a task with checkpoints"):
        JointSpace([MergeKnob()], layers, n_checkpoints=0)
    with pytest.raises(ValueError, match="selected by two bitwidth knobs"):
        JointSpace([BitwidthKnob(), BitwidthKnob()], layers)
    with pytest.raises(ValueError, match="not among the knob's choices"):
        JointSpace([BitwidthKnob(choices=[2, 4])], layers).uniform_params(bits=8)


def test_stored_prune_ratios_and_stepped_floats_carry_no_float_noise(layers):
    """0.1 * 6 is 0.6000000000000001 in binary floats; a stored config says 0.6."""
    space = JointSpace([PruneKnob(high=0.9, step=0.1), FloatKnob(name="wd", low=0.0, high=1.0, step=0.1)], layers)
    params = {**space.uniform_params(), **{n: 0.1 * 6 for n in space.param_names if n.startswith("prune:")},
              "wd": 0.1 * 3}
    config = space.config_from_params(params)
    assert set(config.prune.values()) == {0.6}
    assert config.hparams["wd"] == 0.3
    assert "0.6000000000000001" not in repr(config.to_dict())
    # and through Optuna's own sampling: every stored ratio is a plain decimal of the step
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    ratios = set()
    for _ in range(30):
        trial = study.ask()
        ratios |= set(space.suggest(trial).prune.values())
        study.tell(trial, 0.0)
    assert ratios and all(r == round(r, 1) for r in ratios)
