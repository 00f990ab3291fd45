"""Sampler name -> factory. Specs pick samplers by name, with options checked by a typed
model per sampler: only plain values, so nothing a client sends can name code to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import optuna
from optuna.samplers import BaseSampler
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError



class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(_Options):
    pass


class TPEOptions(_Options):
    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True
    consider_endpoints: bool = False
    prior_weight: float = Field(1.0, gt=0)


class GPOptions(_Options):
    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class NSGA2Options(_Options):
    population_size: int = Field(50, ge=2)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)


class XGBoostOptions(_Options):
    n_startup_trials: int = Field(10, ge=1)
    n_candidates: int = Field(2000, ge=10, le=100000)
    n_estimators: int = Field(30, ge=1, le=2000)
    max_depth: int = Field(5, ge=1, le=16)
    max_train: int = Field(400, ge=10)
    beta: float = Field(1.0, ge=0)
    noisy_objectives: bool = Field(
        False, description="let completed configurations be tried again (otherwise no configuration is spent twice)")
    transfer_from: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]] = Field(
        default_factory=list, max_length=8,
        description="names of stored studies in the same storage whose trials the surrogate learns from "
                    "(per-layer features; their weight falls as this study's own trials arrive)")
    transfer_decay: float = Field(
        20.0, gt=0, le=10000, description="own trials at which a source trial counts half")


def _tpe(**kwargs: Any) -> BaseSampler:
    from paretoml.surrogates.tpe import RungAwareTPESampler

    return RungAwareTPESampler(**kwargs)


def _xgboost(**kwargs: Any) -> BaseSampler:
    from paretoml.surrogates.xgboost_sampler import XGBoostSampler

    return XGBoostSampler(**kwargs)


class ZerothOrderOptions(_Options):
    a: float = Field(0.2, gt=0, description="step gain, in units of the unit cube")
    c: float = Field(0.1, gt=0, le=0.5, description="perturbation size, in units of the unit cube")
    stability: float = Field(5.0, ge=0)
    n_chains: int = Field(5, ge=1, le=100, description="scalarisation directions (multi-objective)")
    fallback: Literal["tpe", "random"] = "tpe"


def _zeroth_order(**kwargs: Any) -> BaseSampler:
    from paretoml.surrogates.zeroth_order import ZerothOrderSampler

    return ZerothOrderSampler(**kwargs)


@dataclass(frozen=True)
class SamplerEntry:
    name: str
    factory: Callable[..., BaseSampler]
    options: type[_Options]
    summary: str
    #: whether the sampler steers by the constraints, which it reads from the trials
    #: (``trial.constraints``: the runner sets them with Optuna's ``Trial.set_constraint``)
    constraint_aware: bool = True


SAMPLERS: dict[str, SamplerEntry] = {
    e.name: e
    for e in (
        SamplerEntry("random", optuna.samplers.RandomSampler, NoOptions, "uniform random search", False),
        SamplerEntry("tpe", _tpe, TPEOptions, "Optuna's (multi-objective) TPE"),
        SamplerEntry("gp", optuna.samplers.GPSampler, GPOptions, "Optuna's Gaussian-process Bayesian optimisation"),
        SamplerEntry("nsga2", optuna.samplers.NSGAIISampler, NSGA2Options, "NSGA-II evolutionary search"),
        SamplerEntry("xgboost", _xgboost, XGBoostOptions,
                     "Quantune-style XGBoost quantile surrogate, random-scalarisation LCB, constraint aware"),
        SamplerEntry("zeroth-order", _zeroth_order, ZerothOrderOptions,
                     "SPSA on continuous knobs (merge coefficients, ratios); others by a fallback", False),
    )
}


class SamplerOptionsError(ValueError):
    pass


def validate_sampler(name: str, options: dict[str, Any]) -> _Options:
    """The typed options of sampler ``name``; raises SamplerOptionsError naming the option."""
    if name not in SAMPLERS:
        raise SamplerOptionsError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    model = SAMPLERS[name].options
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields) or "none"
            raise SamplerOptionsError(f"sampler {name!r} has no option {field!r}; options: {allowed}") from None
        raise SamplerOptionsError(f"sampler {name!r} option {field!r}: {item['msg']}") from None


def create_sampler(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    seed: int | None = None,
) -> BaseSampler:
    entry = SAMPLERS.get(name)
    kwargs = validate_sampler(name, options or {}).model_dump(exclude_unset=True)
    assert entry is not None
    kwargs["seed"] = seed
    return entry.factory(**kwargs)
