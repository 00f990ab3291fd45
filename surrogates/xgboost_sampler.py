"""Quantune-style XGBoost surrogate sampler, multi-objective and constraint aware.

Per suggestion: encode the completed trials (``search_space.encoding``), fit one XGBoost
quantile model per objective and per constraint (10th/50th/90th percentiles in one model,
so the spread is the uncertainty), score a pool of candidates (uniform draws plus mutations
of the current Pareto set) by a random-scalarisation lower confidence bound (augmented
Chebyshev, weights drawn per trial), prefer candidates predicted feasible, keep away from
trials still running (diverse batches for parallel workers), and propose the best.

The first ``n_startup_trials`` follow a scrambled Sobol sequence. Nothing is kept between
calls: every suggestion is rebuilt from the study's trials with a generator seeded by
``(seed, trial.number)``, so seeds reproduce and a resumed study continues as it would have.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from paretoml.search_space.encoding import VectorEncoding
from paretoml.surrogates.pareto import loss_signs, non_dominated

_QUANTILES = np.array([0.1, 0.5, 0.9])
_Z90 = 2.5631  # width of the 10-90 % interval of a normal, in standard deviations


class XGBoostSampler(BaseSampler):
    def __init__(
        self,
        *,
        n_startup_trials: int = 10,
        n_candidates: int = 2000,
        n_estimators: int = 30,
        max_depth: int = 5,
        max_train: int = 400,
        beta: float = 1.0,
        seed: int | None = None,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
    ) -> None:
        self.n_startup_trials = n_startup_trials
        self.n_candidates = n_candidates
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_train = max_train
        self.beta = beta
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**31))
        self._constraints_func = constraints_func
        self._independent = RandomSampler(seed=seed)
        self._encoded: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    # -- Optuna's sampler interface ----------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The space of the latest completed trial (cheap; ``sample_relative`` then uses only
        the trials that share it). A study of one JointSpace has a single space anyway."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return {}
        return {n: d for n, d in sorted(complete[-1].distributions.items()) if not d.single()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        encoding = VectorEncoding(search_space)
        rng = np.random.default_rng([self._seed, trial.number])
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if all(n in t.params for n in search_space)]
        if len(complete) < self.n_startup_trials:
            return encoding.decode(self._sobol_point(encoding.size, trial.number))
        all_losses = np.array([t.values for t in complete], dtype=float) * loss_signs(study.directions)
        front = non_dominated(all_losses)
        chosen = self._training_set(front)
        complete = [complete[i] for i in chosen]
        losses, front = all_losses[chosen], front[chosen]
        x = np.stack([self._encode(encoding, t) for t in complete])
        candidates = self._candidates(x[front], encoding.size, rng)
        score = self._scalarised_lcb(x, losses, candidates, rng)
        if self._constraints_func is not None:
            violations = np.array([list(self._constraints_func(t)) for t in complete], dtype=float)
            score = score + self._infeasibility(x, violations, candidates)
        running = [self._encode(encoding, t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number != trial.number and all(n in t.params for n in search_space)]
        # keep off the running trials and the front (mutations start there); far points are fine
        score = score + self._crowding(np.vstack([x[front], *running]), candidates)
        return encoding.decode(candidates[int(np.argmin(score))])

    def _encode(self, encoding: VectorEncoding, trial: FrozenTrial) -> np.ndarray:
        """Encodings are pure functions of a trial's parameters, so they are memoised."""
        key = (trial.number, tuple(encoding.distributions))
        cached = self._encoded.get(key)
        if cached is None:
            cached = self._encoded[key] = encoding.encode(trial.params)
        return cached

    # -- pieces ----------------------------------------------------------------------------------
    def _training_set(self, front: np.ndarray) -> np.ndarray:
        """Indices of all trials up to ``max_train``; beyond, the Pareto set plus the most
        recent trials, which keeps a suggestion's cost flat as a study grows."""
        n = len(front)
        if n <= self.max_train:
            return np.arange(n)
        keep = set(np.flatnonzero(front)[: self.max_train // 2].tolist())
        for index in range(n - 1, -1, -1):
            if len(keep) >= self.max_train:
                break
            keep.add(index)
        return np.array(sorted(keep))

    def _sobol_point(self, dim: int, index: int) -> np.ndarray:
        from scipy.stats import qmc

        engine = qmc.Sobol(d=dim, scramble=True, seed=self._seed)
        if index:
            engine.fast_forward(index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return engine.random(1)[0]

    def _candidates(self, front: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
        """Half uniform draws, half mutations of the non-dominated trials."""
        n_mut = self.n_candidates // 2
        parents = front[rng.integers(len(front), size=n_mut)]
        mask = rng.random((n_mut, dim)) < max(1.0 / dim, 0.2)
        mutated = np.clip(parents + mask * rng.normal(0.0, 0.15, size=(n_mut, dim)), 0.0, 1.0)
        uniform = rng.random((self.n_candidates - n_mut, dim))
        return np.vstack([mutated, uniform])

    def _quantile_model(self, x: np.ndarray, y: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n_candidates, 3) predicted 10/50/90 % quantiles of the standardised target."""
        import xgboost

        model = xgboost.XGBRegressor(
            objective="reg:quantileerror", quantile_alpha=_QUANTILES, n_estimators=self.n_estimators,
            max_depth=self.max_depth, learning_rate=0.15, tree_method="hist", max_bin=32,
            n_jobs=min(4, os.cpu_count() or 1),
            random_state=self._seed % (2**31),
        )
        model.fit(x, y)
        return np.sort(np.asarray(model.predict(candidates)).reshape(len(candidates), -1), axis=1)

    def _scalarised_lcb(self, x: np.ndarray, losses: np.ndarray, candidates: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        m = losses.shape[1]
        scale = np.where(losses.std(axis=0) > 0, losses.std(axis=0), 1.0)
        z = (losses - losses.mean(axis=0)) / scale
        lcb = np.empty((len(candidates), m))
        for j in range(m):
            q = self._quantile_model(x, z[:, j], candidates)
            sigma = np.maximum((q[:, 2] - q[:, 0]) / _Z90, 1e-9)
            lcb[:, j] = q[:, 1] - self.beta * sigma
        weights = rng.dirichlet(np.ones(m))
        ideal = z.min(axis=0)
        gap = lcb - ideal
        return np.max(weights * gap, axis=1) + 0.05 * np.sum(weights * gap, axis=1)

    def _infeasibility(self, x: np.ndarray, violations: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Large for candidates whose median predicted violation is positive."""
        penalty = np.zeros(len(candidates))
        for k in range(violations.shape[1]):
            v = violations[:, k]
            scale = float(np.abs(v).max()) or 1.0
            median = self._quantile_model(x, v / scale, candidates)[:, 1]
            penalty += np.where(median > 0, 1e3 + median, 0.0)
        return penalty

    @staticmethod
    def _crowding(taken: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Push candidates away from evaluated and running points (diverse parallel batches)."""
        radius = 0.05 * np.sqrt(candidates.shape[1])
        distance = np.min(np.linalg.norm(candidates[:, None, :] - taken[None, :, :], axis=2), axis=1)
        return np.where(distance < radius, 1e2 * (1 - distance / radius), 0.0)
