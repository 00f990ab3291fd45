"""What a model-based sampler learns from a study's trials, beyond the completed ones.

* Which configurations are taken: completed, running, failed, pruned and queued (enqueued)
  trials, compared exactly by their snapped encodings, so a deterministic study never spends a
  trial on a configuration twice.
* Which failed trials failed *for their configuration*: those are feasibility samples
  (infeasible). A failed trial that was given back and queued again (the runner's interrupt
  path marks the new trial ``paretoml:retry_of``; Optuna's heartbeat retry marks it
  ``failed_trial``) failed for its circumstances and teaches nothing about its configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from paretoml.search_space.encoding import VectorEncoding
from paretoml.search_space.trial_attrs import FIXED_PARAMS_ATTR, OPTUNA_RETRY_ATTR, RETRY_OF_ATTR
from paretoml.surrogates.optuna_compat import contains


def covers(params: Mapping[str, Any], space: Mapping[str, BaseDistribution]) -> bool:
    """Whether ``params`` holds a valid value for every parameter of ``space``."""
    for name, dist in space.items():
        if name not in params:
            return False
        try:
            if not contains(dist, params[name]):
                # a changed range: floats/ints outside it still encode, categoricals cannot
                if isinstance(dist, optuna.distributions.CategoricalDistribution):
                    return False
        except (ValueError, TypeError):
            return False
    return True


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were queued again (interrupted, not failed by their configuration)."""
    out: set[int] = set()
    for t in trials:
        for value in (t.user_attrs.get(RETRY_OF_ATTR), t.system_attrs.get(OPTUNA_RETRY_ATTR)):
            if isinstance(value, int):
                out.add(value)
    return out


@dataclass
class History:
    """A study's trials as a sampler of ``encoding``'s space sees them."""

    complete: list[FrozenTrial]
    #: snapped encodings of ``complete``
    complete_x: np.ndarray
    #: snapped encodings of the trials that failed for their configuration (feasibility samples)
    failed_x: np.ndarray
    #: encodings (snapped) of every configuration taken, other than the one being sampled
    taken: np.ndarray
    #: encodings of the running trials (other than the one being sampled)
    running: np.ndarray

    @property
    def taken_keys(self) -> set[bytes]:
        return set(VectorEncoding.keys(self.taken)) if len(self.taken) else set()


_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class EncodingCache:
    """Snapped encodings of trials' parameters, memoised: a finished trial's parameters never
    change, so a suggestion at 1,000 trials encodes only the new ones. A pure cache: it holds
    nothing a suggestion depends on beyond the study itself."""

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], np.ndarray | None] = {}

    def encode(self, trial: FrozenTrial, params: Mapping[str, Any], encoding: VectorEncoding,
               signature: int) -> np.ndarray | None:
        key = (signature, trial.number)
        if key in self._memo:
            return self._memo[key]
        vector = encoding.snap(encoding.encode(params))[0] if covers(params, encoding.distributions) else None
        if vector is not None or trial.state in _FINISHED:
            self._memo[key] = vector
        return vector


def read_history(study: optuna.Study, trial: FrozenTrial, encoding: VectorEncoding,
                 cache: EncodingCache | None = None) -> History:
    cache = cache or EncodingCache()
    signature = hash(tuple(encoding.distributions.items()))
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    complete: list[FrozenTrial] = []
    complete_x: list[np.ndarray] = []
    failed_x: list[np.ndarray] = []
    taken: list[np.ndarray] = []
    running: list[np.ndarray] = []
    for t in trials:
        if t.number == trial.number:
            continue
        params = t.params
        if t.state == TrialState.WAITING:
            params = t.system_attrs.get(FIXED_PARAMS_ATTR) or {}
        vector = cache.encode(t, params, encoding, signature)
        if vector is None:
            continue
        taken.append(vector)
        if t.state == TrialState.COMPLETE:
            complete.append(t)
            complete_x.append(vector)
        elif t.state == TrialState.FAIL and t.number not in retried:
            failed_x.append(vector)
        elif t.state == TrialState.RUNNING:
            running.append(vector)

    def stacked(rows: list[np.ndarray]) -> np.ndarray:
        return np.stack(rows) if rows else np.empty((0, encoding.size))

    return History(complete, stacked(complete_x), stacked(failed_x), stacked(taken), stacked(running))
