import optuna
import pytest

from paretoml.search_space.trial_attrs import LEGACY_CONSTRAINTS_ATTR
from paretoml.service.frontier import FrontierRecorder, reference_point, stored_front, stored_history


def test_front_matches_optuna_with_ties_and_constraints(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(directions=["maximize", "minimize"])
    recorder = FrontierRecorder(url, study, ["accuracy", "model_bytes"], {"model_bytes": 100.0})
    points = [(0.5, 50), (0.9, 80), (0.5, 50), (0.4, 60), (0.95, 120), (0.99, 10)]
    for i, (acc, size) in enumerate(points):
        violation = 1.0 if i == 5 else -1.0  # the last one is infeasible
        if i % 2:  # as the runner stores them now (Trial.set_constraint) ...
            trial = optuna.create_trial(values=[acc, size], constraints={"model_bytes": violation})
        else:  # ... and as studies stored before did: a user attribute list
            trial = optuna.create_trial(values=[acc, size], user_attrs={LEGACY_CONSTRAINTS_ATTR: [violation]})
        study.add_trial(trial)
        recorder(study, study.trials[-1])
    front = stored_front(url, study.study_name)
    # (0.4, 60) is dominated, (0.99, 10) is infeasible, the tie (0.5, 50) is kept twice
    assert sorted(p.trial_number for p in front) == [0, 1, 2, 4]
    assert {tuple(p.values) for p in front} == {(0.5, 50.0), (0.9, 80.0), (0.95, 120.0)}
    history = stored_history(url, study.study_name)
    assert [h.n_complete for h in history] == [1, 2, 3, 5]
    # losses (-acc, bytes) against the reference point (0, 200): area of the union of boxes
    expected = 0.5 * (200 - 50) + (0.9 - 0.5) * (200 - 80) + (0.95 - 0.9) * (200 - 120)
    assert history[-1].hypervolume == pytest.approx(expected)


def test_reference_point_needs_a_reference_for_minimised_objectives():
    d = optuna.study.StudyDirection
    assert reference_point([d.MAXIMIZE, d.MINIMIZE], ["accuracy", "latency_ms"], {"latency_ms": 2.0}).tolist() == [0.0, 4.0]
    assert reference_point([d.MINIMIZE], ["latency_ms"], {}) is None
