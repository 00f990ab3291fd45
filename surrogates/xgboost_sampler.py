"""Quantune-style XGBoost surrogate sampler, multi-objective and constraint aware.

Per suggestion: encode the completed trials (``search_space.encoding``), fit one XGBoost
quantile model per objective and per constraint (10th/50th/90th percentiles in one model,
so the spread is the uncertainty), score a pool of candidates (uniform draws plus mutations
of the current Pareto set) by a random-scalarisation lower confidence bound (augmented
Chebyshev, weights drawn per trial), prefer candidates predicted feasible, keep away from
trials still running (diverse batches for parallel workers), and propose the best.

Candidates are snapped to the configurations they decode to, and every configuration already
taken (completed, running, failed, pruned or queued) is dropped, so a deterministic study never
spends a trial twice on one configuration (``noisy_objectives=True`` allows repeats of completed
ones). A discrete space of at most ``n_candidates`` configurations is enumerated and every unseen
one scored; once all have been seen the sampler warns (once) and lets configurations repeat.
Trials that failed for their configuration (``surrogates.trial_history``) are feasibility
samples: a model of failure keeps suggestions away from them and their neighbours.

The first ``n_startup_trials`` (at most a twelfth of a small discrete space) follow a scrambled
Sobol sequence (skipping taken configurations).
Nothing is kept between calls (but memoised encodings and the cached source studies): every
suggestion is rebuilt from the study's trials with a generator seeded by ``(seed, trial.number)``,
so seeds reproduce and a resumed study continues as it would have.

``transfer_from`` names other stored studies of the same storage (``surrogates.transfer``):
their completed trials join the training set, described by name-free layer features beside
the target's own encoding (missing for source rows), with a study feature and a weight that
falls as the target's trials arrive; the surrogate then leads from the first trial (no Sobol
start-up).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives.threads import thread_budget
from paretoml.search_space.encoding import VectorEncoding
from paretoml.surrogates.pareto import loss_signs, non_dominated
from paretoml.surrogates.trial_history import EncodingCache, History, read_history
from paretoml.surrogates.transfer import SOURCES, TransferSet, source_weight, transfer_set

_QUANTILES = np.array([0.1, 0.5, 0.9])
_Z90 = 2.5631  # width of the 10-90 % interval of a normal, in standard deviations


def constraint_matrix(trials: Sequence[FrozenTrial]) -> np.ndarray | None:
    """The trials' constraint values (Optuna's ``trial.constraints``), one column per key in
    sorted order, a key a trial lacks counting as satisfied (0); None when no trial has any."""
    keys = sorted({key for trial in trials for key in trial.constraints})
    if not keys:
        return None
    return np.array([[trial.constraints.get(key, 0.0) for key in keys] for trial in trials], dtype=float)


class XGBoostSampler(BaseSampler):
    """Quantune-style XGBoost surrogate sampler (see the module doc).

    Args:
        n_startup_trials: trials drawn from a scrambled Sobol sequence before the surrogate
            is fitted (at most a twelfth of a small discrete space).
        n_candidates: candidates scored per suggestion; a discrete space no larger than this
            is enumerated instead.
        n_estimators: boosting rounds of each quantile model.
        max_depth: depth of each tree.
        max_train: most trials a model is fitted on (beyond: the Pareto set plus the latest).
        beta: weight of the spread in the lower confidence bound (exploration).
        seed: seeds the Sobol sequence and each suggestion's generator, with the trial number.
        noisy_objectives: allow repeating a completed configuration (never a failed one).
    """

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
        noisy_objectives: bool = False,
        transfer_from: Sequence[str] = (),
        transfer_decay: float = 20.0,
    ) -> None:
        self.n_startup_trials = n_startup_trials
        self.n_candidates = n_candidates
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_train = max_train
        self.beta = beta
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**31))
        self.noisy_objectives = noisy_objectives
        self.transfer_from = tuple(transfer_from)
        self.transfer_decay = transfer_decay
        self._independent = RandomSampler(seed=seed)
        self._cache = EncodingCache()
        self._warned_exhausted = False

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

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._independent.after_trial(study, trial, state, values)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        encoding = VectorEncoding(search_space)
        rng = np.random.default_rng([self._seed, trial.number])
        history = read_history(study, trial, encoding, self._cache)
        transfer = (transfer_set(study, encoding, self.transfer_from, SOURCES, self.max_train // 2)
                    if self.transfer_from else None)
        # completed configurations may repeat when the objectives are noisy; others never
        avoid = history.taken_keys
        if self.noisy_objectives:
            avoid -= set(encoding.keys(history.complete_x)) if len(history.complete_x) else set()
        if transfer is None and len(history.complete) < self._n_startup(encoding.cardinality()):
            return encoding.decode(self._startup_point(encoding, trial.number, avoid, rng))
        candidates = self._unseen_candidates(encoding, history, avoid, rng)
        values = np.array([t.values for t in history.complete], dtype=float).reshape(-1, len(study.directions))
        all_losses = values * loss_signs(study.directions)
        front = non_dominated(all_losses) if len(all_losses) else np.zeros(0, dtype=bool)
        chosen = self._training_set(front)
        complete = [history.complete[i] for i in chosen]
        losses, front, x = all_losses[chosen], front[chosen], history.complete_x[chosen]
        if candidates is None:
            candidates = self._candidates(x[front], encoding, rng, avoid)
        if transfer is None:
            score = self._scalarised_lcb(x, losses, candidates, rng)
        else:
            score = self._transfer_lcb(transfer, encoding, x, values[chosen], candidates, rng)
        violations = constraint_matrix(complete)
        if violations is not None:
            score = score + self._infeasibility(x, violations, candidates)
        if len(history.failed_x) and len(x):
            score = score + self._failure_risk(x, history.failed_x[-self.max_train:], candidates)
        # keep off the running trials and the front (mutations start there); far points are fine
        taken = np.vstack([x[front], history.running])
        if len(taken):
            score = score + self._crowding(taken, candidates)
        return encoding.decode(candidates[int(np.argmin(score))])

    def _n_startup(self, size: int | None) -> int:
        """``n_startup_trials``, but at most a twelfth of a small discrete space (4 of 48
        configurations: 10 Sobol trials would be a fifth of it; measured on the quantune-48
        table, seeds 100-119: median 12 trials to within 0.5 pp of the best with 10, 6.5 with 4)."""
        n = self.n_startup_trials if size is None else min(self.n_startup_trials, max(2, size // 12))
        return max(n, 1)

    # -- configurations not taken yet ------------------------------------------------------------
    def _unseen_candidates(self, encoding: VectorEncoding, history: History, avoid: set[bytes],
                           rng: np.random.Generator) -> np.ndarray | None:
        """Every unseen configuration of a space of at most ``n_candidates``; None for larger
        spaces (candidates are then drawn, and filtered, around the front)."""
        size = encoding.cardinality()
        if size is None or size > self.n_candidates:
            return None
        grid = encoding.grid()
        keep = np.array([k not in avoid for k in encoding.keys(grid)])
        if keep.any():
            return grid[keep]
        self._warn_exhausted(size)
        return grid

    def _warn_exhausted(self, size: int | None) -> None:
        if not self._warned_exhausted:
            self._warned_exhausted = True
            what = f"all {size} configurations" if size else "every candidate configuration"
            warnings.warn(f"XGBoostSampler: {what} of the search space have been tried; "
                          "further trials repeat configurations", stacklevel=3)

    @staticmethod
    def _drop_taken(encoding: VectorEncoding, points: np.ndarray, avoid: set[bytes]) -> np.ndarray:
        """The rows of ``points`` whose configurations are not taken, in their order.

        The rows stay where they were drawn (each decodes to its configuration), so continuous
        spaces are scored exactly as before; two rows of one untaken configuration both stay
        (the better scored wins). Scoring the snapped rows instead was measured no better
        (benchmarks/results/search-efficiency.md, issue 17)."""
        if not avoid:
            return points
        keys = encoding.keys(encoding.snap(points))
        return points[np.array([key not in avoid for key in keys], dtype=bool)]

    def _startup_point(self, encoding: VectorEncoding, index: int, avoid: set[bytes],
                       rng: np.random.Generator) -> np.ndarray:
        """The Sobol point of this trial, or the next unseen one of the sequence; then any
        unseen configuration; once the space is exhausted, the Sobol point again."""
        points = self._sobol_points(encoding.size, index, 64)
        fresh = self._drop_taken(encoding, points, avoid)
        if len(fresh):
            return fresh[0]
        size = encoding.cardinality()
        pool = encoding.grid() if size is not None and size <= self.n_candidates else rng.random((self.n_candidates, encoding.size))
        fresh = self._drop_taken(encoding, pool, avoid)
        if len(fresh):
            return fresh[rng.integers(len(fresh))]
        self._warn_exhausted(size)
        return points[0]

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

    def _sobol_points(self, dim: int, index: int, n: int) -> np.ndarray:
        from scipy.stats import qmc

        engine = qmc.Sobol(d=dim, scramble=True, seed=self._seed)
        if index:
            engine.fast_forward(index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return engine.random(n)

    def _candidates(self, front: np.ndarray, encoding: VectorEncoding, rng: np.random.Generator,
                    avoid: set[bytes]) -> np.ndarray:
        """Half uniform draws, half mutations of the non-dominated trials, snapped, without the
        taken configurations (more uniform draws if nearly all were taken)."""
        dim = encoding.size
        n_mut = self.n_candidates // 2 if len(front) else 0
        parents = front[rng.integers(len(front), size=n_mut)]
        mask = rng.random((n_mut, dim)) < max(1.0 / dim, 0.2)
        mutated = np.clip(parents + mask * rng.normal(0.0, 0.15, size=(n_mut, dim)), 0.0, 1.0)
        uniform = rng.random((self.n_candidates - n_mut, dim))
        candidates = self._drop_taken(encoding, np.vstack([mutated, uniform]), avoid)
        for _ in range(3):
            if len(candidates):
                return candidates
            candidates = self._drop_taken(encoding, rng.random((self.n_candidates, dim)), avoid)
        self._warn_exhausted(None)
        return np.vstack([mutated, uniform])

    def _regressor(self) -> Any:
        """An unfitted quantile model, on this process's thread budget (the sampler's process
        shares the machine with the workers; objectives/threads.py)."""
        import xgboost

        return xgboost.XGBRegressor(
            objective="reg:quantileerror", quantile_alpha=_QUANTILES, n_estimators=self.n_estimators,
            max_depth=self.max_depth, learning_rate=0.15, tree_method="hist", max_bin=32,
            n_jobs=thread_budget(), random_state=self._seed % (2**31),
        )

    def _quantile_model(self, x: np.ndarray, y: np.ndarray, candidates: np.ndarray,
                        weight: np.ndarray | None = None) -> np.ndarray:
        """(n_candidates, 3) predicted 10/50/90 % quantiles of the standardised target."""
        model = self._regressor()
        model.fit(x, y, sample_weight=weight)
        return np.sort(np.asarray(model.predict(candidates)).reshape(len(candidates), -1), axis=1)

    def _scalarised_lcb(self, x: np.ndarray, losses: np.ndarray, candidates: np.ndarray,
                        rng: np.random.Generator, weight: np.ndarray | None = None,
                        n_own: int | None = None) -> np.ndarray:
        """``weight``: per training row (sources lighter); the ideal point is that of the first
        ``n_own`` rows (the study's own trials; all rows when None or none of its own yet)."""
        m = losses.shape[1]
        scale = np.where(losses.std(axis=0) > 0, losses.std(axis=0), 1.0)
        z = (losses - losses.mean(axis=0)) / scale
        quantiles = np.stack([self._quantile_model(x, z[:, j], candidates, weight) for j in range(m)], axis=1)
        sigma = np.maximum((quantiles[:, :, 2] - quantiles[:, :, 0]) / _Z90, 1e-9)
        lcb = quantiles[:, :, 1] - self.beta * sigma
        weights = rng.dirichlet(np.ones(m))
        ideal = z[:n_own].min(axis=0) if n_own else z.min(axis=0)
        gap = lcb - ideal
        return np.max(weights * gap, axis=1) + 0.05 * np.sum(weights * gap, axis=1)

    def _transfer_lcb(self, transfer: TransferSet, encoding: VectorEncoding, x: np.ndarray,
                      values: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The scalarised LCB of a model trained on the study's own trials and the sources':
        columns [own encoding (missing for sources), layer features, study index]."""
        own = np.hstack([x, transfer.point_features(encoding, x), np.zeros((len(x), 1))])
        n_s = len(transfer.features)
        source = np.hstack([np.full((n_s, encoding.size), np.nan), transfer.features, transfer.study[:, None]])
        rows = np.vstack([own, source])
        losses = np.vstack([transfer.target_losses(values), transfer.losses])
        weight = np.concatenate([np.ones(len(x)), np.full(n_s, source_weight(len(x), self.transfer_decay))])
        points = np.hstack([candidates, transfer.point_features(encoding, candidates), np.zeros((len(candidates), 1))])
        return self._scalarised_lcb(rows, losses, points, rng, weight, len(x))

    def _infeasibility(self, x: np.ndarray, violations: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Large for candidates whose median predicted violation is positive."""
        penalty = np.zeros(len(candidates))
        for k in range(violations.shape[1]):
            v = violations[:, k]
            scale = float(np.abs(v).max()) or 1.0
            median = self._quantile_model(x, v / scale, candidates)[:, 1]
            penalty += np.where(median > 0, 1e3 + median, 0.0)
        return penalty

    def _failure_risk(self, ok: np.ndarray, failed: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Large for candidates whose median predicted outcome is failure: the failed trials
        are feasibility samples (+1) against the completed ones (-1), as constraints are."""
        x = np.vstack([ok, failed])
        label = np.concatenate([-np.ones(len(ok)), np.ones(len(failed))])
        median = self._quantile_model(x, label, candidates)[:, 1]
        return np.where(median > 0, 1e3 + median, 0.0)

    @staticmethod
    def _crowding(taken: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Push candidates away from evaluated and running points (diverse parallel batches)."""
        radius = 0.05 * np.sqrt(candidates.shape[1])
        distance = np.min(np.linalg.norm(candidates[:, None, :] - taken[None, :, :], axis=2), axis=1)
        return np.where(distance < radius, 1e2 * (1 - distance / radius), 0.0)
