"""Pruner name -> factory: stop bad trials early, at rungs of fine-tuning or of evaluation size.

Specs pick pruners by name with typed options, like samplers (surrogates/registry.py), so
nothing a client sends can name code to run.

Single-objective studies use Optuna's own pruners on the intermediate values (the task
metric at each rung). Optuna's pruners are single-objective, so multi-objective studies use
:class:`ParetoRankPruner`, whose rule is:

    At rung *s*, take every other trial that reported at *s* (running, complete or pruned)
    with the objectives measurable there: the task metrics (accuracy, fidelity, ...)
    scored at that point of fine-tuning, and the objectives known at once from the config
    (model_bytes, mean_bits). Rank them by non-dominated sorting together with this trial.
    The trial goes on only if fewer than ``keep_fraction`` of them sit in strictly better
    fronts than its own; ``min_trials`` trials must have reported at *s* before any is
    stopped there.

``successive-halving`` and ``hyperband`` keep ``1 / reduction_factor`` there (Hyperband's
brackets are single-objective only: a multi-objective study gets one bracket), ``median``
keeps the better half; ``wilcoxon`` compares paired rung values with the best trial, which
has no multi-objective meaning, so a multi-objective spec asking for it is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paretoml.search_space.trial_attrs import RUNGS_ATTR  # {step (as str): {objective: value}} per rung passed
from paretoml.surrogates.pareto import better_front_count, loss_signs  # noqa: F401 (better_front_count re-exported)



class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoOptions(_Options):
    pass


class SuccessiveHalvingOptions(_Options):
    min_resource: int | None = Field(None, ge=1, description="steps before the first rung, in the rungs' unit (fine-tune "
                                                              "steps, or validation samples with over: evaluation); "
                                                              "None: Optuna's 'auto'")
    reduction_factor: int = Field(3, ge=2, le=100)
    min_early_stopping_rate: int = Field(0, ge=0)
    min_trials: int = Field(4, ge=1, description="multi-objective: trials at a rung before any is stopped there")


class HyperbandOptions(_Options):
    min_resource: int = Field(1, ge=1, description="the smallest bracket's first rung, in the rungs' unit (fine-tune "
                                                    "steps, or validation samples with over: evaluation: set it near "
                                                    "the first rung's samples, or brackets start past the rungs)")
    reduction_factor: int = Field(3, ge=2, le=100)
    min_trials: int = Field(4, ge=1, description="multi-objective: trials at a rung before any is stopped there")


class MedianOptions(_Options):
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    n_min_trials: int = Field(1, ge=1)


class WilcoxonOptions(_Options):
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: int = Field(2, ge=0)


@dataclass(frozen=True)
class PrunerEntry:
    name: str
    options: type[_Options]
    summary: str
    single: Callable[[Any, int | None], BasePruner]
    #: None: the pruner has no multi-objective form
    multi: Callable[[Any], BasePruner] | None


def _sh(o: SuccessiveHalvingOptions, steps: int | None) -> BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=o.min_resource or "auto", reduction_factor=o.reduction_factor,
        min_early_stopping_rate=o.min_early_stopping_rate)


def _hyperband(o: HyperbandOptions, steps: int | None) -> BasePruner:
    return optuna.pruners.HyperbandPruner(
        min_resource=o.min_resource, max_resource=max(steps, o.min_resource + 1) if steps else "auto",
        reduction_factor=o.reduction_factor)


PRUNERS: dict[str, PrunerEntry] = {
    e.name: e
    for e in (
        PrunerEntry("none", NoOptions, "every trial runs to the end",
                    lambda o, s: optuna.pruners.NopPruner(), lambda o: optuna.pruners.NopPruner()),
        PrunerEntry("successive-halving", SuccessiveHalvingOptions,
                    "asynchronous successive halving: keep the best 1/reduction_factor at each rung",
                    _sh, lambda o: ParetoRankPruner(1 / o.reduction_factor, o.min_trials)),
        PrunerEntry("hyperband", HyperbandOptions, "Hyperband: successive halving over several brackets",
                    _hyperband, lambda o: ParetoRankPruner(1 / o.reduction_factor, o.min_trials)),
        PrunerEntry("median", MedianOptions, "stop below the median of earlier trials at the same rung",
                    lambda o, s: optuna.pruners.MedianPruner(o.n_startup_trials, o.n_warmup_steps,
                                                             n_min_trials=o.n_min_trials),
                    lambda o: ParetoRankPruner(0.5, max(o.n_startup_trials, o.n_min_trials, 1))),
        PrunerEntry("wilcoxon", WilcoxonOptions,
                    "Wilcoxon signed-rank test of the rung values against the best trial (single objective)",
                    lambda o, s: optuna.pruners.WilcoxonPruner(p_threshold=o.p_threshold,
                                                               n_startup_steps=o.n_startup_steps),
                    None),
    )
}


class PrunerOptionsError(ValueError):
    pass


def validate_pruner(name: str, options: dict[str, Any], n_objectives: int = 1) -> _Options:
    """The typed options of pruner ``name``; raises PrunerOptionsError naming the option."""
    if name not in PRUNERS:
        raise PrunerOptionsError(f"unknown pruner {name!r}; available: {', '.join(sorted(PRUNERS))}")
    entry = PRUNERS[name]
    try:
        parsed = entry.options.model_validate(options)
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(entry.options.model_fields) or "none"
            raise PrunerOptionsError(f"pruner {name!r} has no option {field!r}; options: {allowed}") from None
        raise PrunerOptionsError(f"pruner {name!r} option {field!r}: {item['msg']}") from None
    if n_objectives > 1 and entry.multi is None:
        multi = ", ".join(sorted(n for n, e in PRUNERS.items() if e.multi is not None))
        raise PrunerOptionsError(f"pruner {name!r} is single-objective only; multi-objective studies: {multi}")
    return parsed


def create_pruner(name: str, options: dict[str, Any] | None, n_objectives: int, steps: int | None) -> BasePruner:
    """The pruner for a study of ``n_objectives`` objectives whose last rung step is ``steps``
    (the full fine-tune, or the validation samples; None: unknown, learnt by Optuna)."""
    parsed = validate_pruner(name, options or {}, n_objectives)
    entry = PRUNERS[name]
    if n_objectives > 1:
        assert entry.multi is not None
        return entry.multi(parsed)
    return entry.single(parsed, steps)


def rung_vectors(trials: Sequence[FrozenTrial], step: int, names: Sequence[str],
                 skip: int) -> list[list[float]]:
    """The rung values at ``step`` of every trial but number ``skip``, over ``names``."""
    rows = []
    for t in trials:
        if t.number == skip:
            continue
        values = t.user_attrs.get(RUNGS_ATTR, {}).get(str(step))
        if values is not None and all(n in values for n in names):
            rows.append([float(values[n]) for n in names])
    return rows


class ParetoRankPruner(BasePruner):
    """Multi-objective successive halving by Pareto rank at each rung (see the module doc).

    Args:
        keep_fraction: share of the trials at a rung that go on, in (0, 1]: a trial stops
            when at least ``ceil(keep_fraction * n)`` of the ``n`` trials there (itself
            included) lie in strictly better non-dominated fronts.
        min_trials: other trials a rung needs before it stops any.
    """

    def __init__(self, keep_fraction: float, min_trials: int = 4) -> None:
        if not 0 < keep_fraction <= 1:
            raise ValueError("keep_fraction must be in (0, 1]")
        self.keep_fraction = keep_fraction
        self.min_trials = min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        rungs: dict[str, dict[str, float]] = trial.user_attrs.get(RUNGS_ATTR, {})
        if not rungs:
            return False
        step = max(int(s) for s in rungs)
        mine = rungs[str(step)]
        directions = study.directions
        names = [n for n in (study.metric_names or []) if n in mine]
        signs = loss_signs([d for d, n in zip(directions, study.metric_names or []) if n in mine])
        if not names:
            return False
        others = rung_vectors(study.get_trials(deepcopy=False), step, names, trial.number)
        if len(others) < self.min_trials:
            return False
        losses = np.array(others + [[float(mine[n]) for n in names]]) * signs
        better = better_front_count(losses, len(losses) - 1)
        keep = math.ceil(self.keep_fraction * len(losses))
        return better >= keep

