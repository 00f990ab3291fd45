"""The progress bar of a running study (trials done of the budget, best values), drawn only
where someone watches, and ``paretoml.search`` without warnings a user cannot act on."""

from __future__ import annotations

import io
import warnings

import optuna
import torch
from rich.console import Console
from torch import nn

import paretoml
from paretoml.service.progress import StudyProgress

INPUTS = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))


def small_search(tmp_path, **kwargs) -> optuna.Study:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    reference = model(INPUTS).detach()
    return paretoml.search(
        model, evaluate=lambda m: {"fidelity": float(1 / (1 + (m(INPUTS) - reference).abs().mean()))},
        metrics={"fidelity": "maximize"}, example_inputs=INPUTS[:4],
        knobs=[{"kind": "bitwidth", "choices": [2, 4, 8]}], objectives=["fidelity", "model_bytes"],
        n_trials=4, storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p",
        measure={"latency_repeats": 1, "latency_warmup": 0}, **kwargs)


def test_bar_shows_trials_done_of_the_budget_and_best_values():
    study = optuna.create_study(directions=["maximize", "minimize"])
    terminal = Console(file=io.StringIO(), force_terminal=True, width=160)
    with StudyProgress(study, ["fidelity", "model_bytes"], terminal) as bar:
        bar(0, 3, None)
        for values in ([0.9, 500.0], [0.95, 800.0], [0.8, 300.0]):
            study.add_trial(optuna.trial.create_trial(values=values))
            bar(len(study.trials), 3, study.trials[-1])
    drawn = terminal.file.getvalue()
    assert "3/3" in drawn and "best fidelity 0.95, model_bytes 300" in drawn
    # infeasible trials do not count as best
    piped = Console(file=io.StringIO(), width=160)
    with StudyProgress(study, ["fidelity", "model_bytes"], piped) as bar:  # resumed: seeded from the study
        assert bar.best.best == [0.95, 300.0]
        bar(3, 4, optuna.trial.create_trial(values=[1.0, 1.0], constraints={"model_bytes": 5.0}))
        assert bar.best.best == [0.95, 300.0]
    assert piped.file.getvalue() == ""  # not a terminal: no bar


def test_search_draws_progress_and_raises_no_warnings(tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = small_search(tmp_path, progress=True)
    assert len(study.trials) == 4
    ours = [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)
            or "Heartbeat" in str(w.message)]
    assert ours == [], [f"{w.category.__name__}: {w.message}" for w in ours]
    err = capsys.readouterr().err
    assert "4/4" in err and "best fidelity" in err
