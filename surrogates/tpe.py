"""Optuna's TPE, able to learn from PRUNED trials of multi-objective studies.

TPE ranks a pruned trial by its last intermediate value in ``study.direction``, which a
multi-objective study does not have (Optuna raises, so every later suggestion fails). Our
rungs store one metric as the intermediate value (the first objective that changes with
fine-tuning, see ``service.runner.rung_objective``), so TPE is shown the study with that
objective's direction as its ``direction``; everything else is the study itself.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from paretoml.objectives.evaluate import KNOWN_BEFORE_EVALUATION

#: Objectives known from the config alone: never a rung's intermediate value in a multi-objective study.
AT_ONCE = KNOWN_BEFORE_EVALUATION


class _RungDirectionStudy:
    """The study, with ``direction`` answering the rung metric's direction."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        names = study.metric_names or []
        index = next((i for i, n in enumerate(names) if n not in AT_ONCE), 0)
        self.direction: StudyDirection = study.directions[index]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def _view(study: optuna.Study) -> optuna.Study:
    return _RungDirectionStudy(study) if len(study.directions) > 1 else study  # type: ignore[return-value]


class RungAwareTPESampler(TPESampler):
    """Optuna's TPESampler, shown a multi-objective study with its rung metric's direction
    (see the module doc). Takes TPESampler's arguments unchanged."""

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return super().sample_relative(_view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return super().sample_independent(_view(study), trial, param_name, param_distribution)
