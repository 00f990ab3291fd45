"""Zeroth-order (SPSA) search over continuous knobs, such as per-layer merge coefficients.

Each iteration ``k`` of a chain evaluates the two points ``theta_k +/- c_k * delta_k`` (delta a
random +/-1 vector) in the unit cube of the float parameters, estimates the gradient of the
scalarised objective from their difference, and steps ``theta_{k+1} = theta_k - a_k * g_k``
(Spall's gains ``a_k = a / (k + 1 + A)^0.602``, ``c_k = c / (k + 1)^0.101``). As in per-layer
merge search (MedSAMix), every coefficient moves at the price of two evaluations.

Multi-objective studies run ``n_chains`` chains, each scalarising the objectives (scaled by
the first completed trial's values) with its own weights, spread across the front. Other
parameters (categorical, int) are left to a fallback sampler. There is no hidden state:
each trial records its chain, iteration and sign as system attributes, and the iterates are
recomputed from the study's trials on every call, so a resumed study continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from paretoml.search_space.encoding import VectorEncoding
from paretoml.search_space.trial_attrs import ZO_CHAIN_ATTR, ZO_SIGN_ATTR, ZO_STEP_ATTR
from paretoml.surrogates.optuna_compat import study_storage, trial_id
from paretoml.surrogates.pareto import loss_signs

CHAIN, STEP, SIGN = ZO_CHAIN_ATTR, ZO_STEP_ATTR, ZO_SIGN_ATTR


class ZerothOrderSampler(BaseSampler):
    """SPSA over the float parameters (see the module doc); the rest goes to a fallback.

    Args:
        a: step-size gain (``a_k = a / (k + 1 + stability)^0.602``), in unit-cube units.
        c: perturbation gain (``c_k = c / (k + 1)^0.101``).
        stability: Spall's ``A``, which keeps the first steps small.
        n_chains: independent chains, each with its own scalarisation weights
            (multi-objective studies).
        fallback: ``"tpe"`` or ``"random"``, for the parameters SPSA does not move.
        seed: seeds the perturbations and the fallback.
    """

    def __init__(
        self,
        *,
        a: float = 0.2,
        c: float = 0.1,
        stability: float = 5.0,
        n_chains: int = 5,
        fallback: str = "tpe",
        seed: int | None = None,
    ) -> None:
        self.a, self.c, self.stability = a, c, stability
        self.n_chains = n_chains
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**31))
        self._fallback: BaseSampler = TPESampler(seed=seed) if fallback == "tpe" else RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not trials:
            return {}
        return {n: d for n, d in sorted(trials[-1].distributions.items())
                if isinstance(d, FloatDistribution) and d.step is None and not d.single()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._fallback.after_trial(study, trial, state, values)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        encoding = VectorEncoding(search_space)
        trials = [t for t in study.get_trials(deepcopy=False) if CHAIN in t.system_attrs and t.number != trial.number]
        chains = 1 if len(study.directions) == 1 else self.n_chains
        issued = [sum(1 for t in trials if t.system_attrs[CHAIN] == j) for j in range(chains)]
        chain = int(np.argmin(issued))
        scales = self._scales(study)
        theta, k = self._iterate(study, trials, chain, chains, encoding, scales)
        members = {t.system_attrs[SIGN] for t in trials if t.system_attrs[CHAIN] == chain
                   and t.system_attrs[STEP] == k and t.state != TrialState.FAIL}
        sign = next((s for s in (1, -1) if s not in members), 0)  # 0: both in flight, evaluate the iterate
        point = np.clip(theta + sign * self._c(k) * self._delta(chain, k, encoding.size), 0.0, 1.0)
        for key, value in ((CHAIN, chain), (STEP, k), (SIGN, sign)):
            study_storage(study).set_trial_system_attr(trial_id(trial), key, value)
        return encoding.decode(point)

    # -- the recursion, recomputed from the trials ---------------------------------------------
    def _iterate(self, study: optuna.Study, trials: list[FrozenTrial], chain: int, chains: int,
                 encoding: VectorEncoding, scales: np.ndarray | None) -> tuple[np.ndarray, int]:
        theta = np.full(encoding.size, 0.5)
        weights = self._weights(chain, chains, len(study.directions))
        signs = loss_signs(study.directions)
        done = {(t.system_attrs[STEP], t.system_attrs[SIGN]): t for t in trials
                if t.system_attrs[CHAIN] == chain and t.state == TrialState.COMPLETE}
        k = 0
        while (k, 1) in done and (k, -1) in done and scales is not None:
            f_plus, f_minus = (float(np.dot(weights, signs * np.asarray(done[(k, s)].values) / scales))
                               for s in (1, -1))
            delta = self._delta(chain, k, encoding.size)
            gradient = (f_plus - f_minus) / (2 * self._c(k)) * delta
            theta = np.clip(theta - self._a(k) * gradient, 0.0, 1.0)
            k += 1
        return theta, k

    def _scales(self, study: optuna.Study) -> np.ndarray | None:
        first = next(iter(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), None)
        if first is None:
            return None
        return np.array([abs(v) if v else 1.0 for v in first.values])

    def _weights(self, chain: int, chains: int, m: int) -> np.ndarray:
        if m == 1:
            return np.ones(1)
        if m == 2:
            angle = (chain + 0.5) / chains * math.pi / 2
            return np.array([math.cos(angle), math.sin(angle)])
        return np.random.default_rng([self._seed, chain]).dirichlet(np.ones(m))

    def _delta(self, chain: int, k: int, dim: int) -> np.ndarray:
        return np.random.default_rng([self._seed, chain, k]).choice([-1.0, 1.0], size=dim)

    def _a(self, k: int) -> float:
        return self.a / (k + 1 + self.stability) ** 0.602

    def _c(self, k: int) -> float:
        return self.c / (k + 1) ** 0.101
