"""Surrogate transfer across studies: what the XGBoost sampler learns from other stored studies.

Quantune's central result: a surrogate trained on measured configurations of *other* models
cuts the search on a new one, when configurations are described per layer rather than by
parameter names. Every ParetoML study lives in one SQL database, so a study can name others
in the same storage (``transfer_from``) and their completed trials join its training set:

* configurations become name-free layer features (``surrogates.layer_features``), computed
  from each trial's stored per-layer config and the study's stored layer table;
* objectives become ratios to the study's uncompressed model (``paretoml:reference``), so the
  accuracy of a CNN and the fidelity of a sentence encoder are both "kept fraction of the
  quality", and bytes "fraction of the fp32 bytes";
* each source trial carries a study feature (0 for the target, 1.. for the sources) and a
  weight ``decay / (decay + n)`` that falls as the target's own ``n`` trials arrive.

A source is refused, with one line naming why, when it is missing, was not made by paretoml,
shares no layer kind with the target, or measures different objectives (a task metric
matches a task metric of the same direction: both are ratios to the uncompressed model; a
system objective matches only itself).

Sources are read once per process and cached by (storage URL, study name): a source is a
finished study, and the sampler otherwise rebuilds everything from the target's storage, so a
resumed study suggests what a never-stopped one would.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from paretoml.objectives.evaluate import SYSTEM_OBJECTIVES
from paretoml.search_space.encoding import VectorEncoding
from paretoml.surrogates.layer_features import LayerTable, LayerValues, aggregate
from paretoml.surrogates.optuna_compat import study_storage
from paretoml.search_space.trial_attrs import CONFIG_ATTR, LAYERS_ATTR, REFERENCE_ATTR, SENSITIVITY_ATTR, SPEC_ATTR
from paretoml.surrogates.sensitivity import sensitivity_from_attr

#: a source's rows used at most (evenly spaced over its trials beyond): bounds a suggestion's cost
MAX_SOURCE_TRIALS = 1000


class TransferError(ValueError):
    """A source study that cannot be learnt from; the message is one line naming why."""


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study lives in (Optuna keeps it private: read through optuna_compat)."""
    return study_storage(study)


def _rdb(storage: BaseStorage) -> BaseStorage:
    """The SQL storage beneath ours (a mirror serves only the studies it made)."""
    return getattr(storage, "rdb", None) or storage


def _storage_key(storage: BaseStorage) -> str:
    inner: Any = _rdb(storage)
    for _ in range(3):
        url = getattr(inner, "url", None)
        if isinstance(url, str):
            return url
        inner = getattr(inner, "_backend", None)
        if inner is None:
            break
    return f"id:{id(storage)}"


@dataclass(frozen=True)
class ObjectiveKind:
    """What an objective measures, as far as transfer cares."""

    name: str
    direction: StudyDirection

    @property
    def task_metric(self) -> bool:
        return self.name not in SYSTEM_OBJECTIVES

    def matches(self, other: ObjectiveKind) -> bool:
        if self.direction != other.direction:
            return False
        return (self.task_metric and other.task_metric) or self.name == other.name


@dataclass(frozen=True)
class StudyDescription:
    """What transfer reads of one stored study (immutable once the study is created).

    Args:
        name: the study's name.
        table: its layers, name-free.
        objectives: its objectives in order.
        reference: the uncompressed model's value of each objective (the normaliser).
        knobs: the spec's knobs, as stored (for the target's parameter -> layers map).
        table_rows: the stored layer rows (likewise).
    """

    name: str
    table: LayerTable
    objectives: tuple[ObjectiveKind, ...]
    reference: dict[str, float]
    knobs: tuple[dict[str, Any], ...]
    table_rows: tuple[dict[str, Any], ...] = ()

    @classmethod
    def read(cls, study: optuna.Study) -> StudyDescription:
        attrs = study.user_attrs
        rows = attrs.get(LAYERS_ATTR)
        if not rows:
            raise TransferError(f"study {study.study_name!r} has no stored layer table (not made by paretoml)")
        names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
        reference = {k: float(v) for k, v in (attrs.get(REFERENCE_ATTR) or {}).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)}
        spec = attrs.get(SPEC_ATTR) or {}
        return cls(
            name=study.study_name,
            table=LayerTable.from_rows(rows, sensitivity_from_attr(attrs.get(SENSITIVITY_ATTR), reference)),
            objectives=tuple(ObjectiveKind(n, d) for n, d in zip(names, study.directions)),
            reference=reference,
            knobs=tuple(spec.get("knobs") or ()),
            table_rows=tuple(rows),
        )

    def scales(self, values: np.ndarray) -> np.ndarray:
        """Per objective, what a value is divided by: the uncompressed model's value, else
        the study's median magnitude (an objective the reference lacks)."""
        out = []
        for j, o in enumerate(self.objectives):
            ref = self.reference.get(o.name)
            if ref is None or ref == 0 or not np.isfinite(ref):
                column = np.abs(values[:, j]) if len(values) else np.ones(1)
                ref = float(np.median(column)) or 1.0
            out.append(abs(ref))
        return np.array(out, dtype=float)


def _signs(objectives: Sequence[ObjectiveKind]) -> np.ndarray:
    return np.array([-1.0 if o.direction == StudyDirection.MAXIMIZE else 1.0 for o in objectives])


@dataclass(frozen=True)
class SourceData:
    """One source study, ready to join a training set: features and normalised losses of
    its completed trials (objectives in the source's own order)."""

    description: StudyDescription
    features: np.ndarray
    losses: np.ndarray


def _read_source(storage: BaseStorage, name: str) -> SourceData:
    try:
        study = optuna.load_study(study_name=name, storage=_rdb(storage))
    except KeyError:
        raise TransferError(f"transfer_from: no study named {name!r} in this storage") from None
    try:
        description = StudyDescription.read(study)
    except TransferError as exc:
        raise TransferError(f"transfer_from: {exc}") from None
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.values is not None and isinstance(t.user_attrs.get(CONFIG_ATTR), dict)]
    if not trials:
        raise TransferError(f"transfer_from: study {name!r} has no completed trials with a stored config")
    if len(trials) > MAX_SOURCE_TRIALS:
        keep = np.unique(np.linspace(0, len(trials) - 1, MAX_SOURCE_TRIALS).round().astype(int))
        trials = [trials[i] for i in keep]
    values = np.array([t.values for t in trials], dtype=float)
    configs = [t.user_attrs[CONFIG_ATTR] for t in trials]
    features = aggregate(description.table, LayerValues.from_configs(description.table, configs))
    losses = values / description.scales(values) * _signs(description.objectives)
    return SourceData(description, features, losses)


class SourceCache:
    """Sources read once per process: (storage URL, study name) -> SourceData. A pure cache
    of finished studies; nothing a suggestion depends on beyond what is stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, str], SourceData] = {}
        self._targets: dict[tuple[str, str], StudyDescription] = {}
        self._param_layers: dict[tuple[str, str, int], dict[str, tuple[str, tuple[str, ...]]]] = {}
        self.reads = 0

    def source(self, storage: BaseStorage, name: str) -> SourceData:
        key = (_storage_key(storage), name)
        with self._lock:
            if key not in self._sources:
                self._sources[key] = _read_source(storage, name)
                self.reads += 1
            return self._sources[key]

    def target(self, study: optuna.Study) -> StudyDescription:
        key = (_storage_key(storage_of(study)), study.study_name)
        with self._lock:
            if key not in self._targets:
                self._targets[key] = StudyDescription.read(study)
            return self._targets[key]

    def param_layers(self, study: optuna.Study, encoding: VectorEncoding) -> dict[str, tuple[str, tuple[str, ...]]]:
        key = (_storage_key(storage_of(study)), study.study_name, hash(tuple(encoding.distributions.items())))
        with self._lock:
            if key not in self._param_layers:
                self._param_layers[key] = param_layers_of(self._targets.get(key[:2]) or StudyDescription.read(study),
                                                          encoding)
            return self._param_layers[key]

    def clear(self) -> None:
        with self._lock:
            self._sources.clear()
            self._targets.clear()
            self._param_layers.clear()
            self.reads = 0


#: the process's cache
SOURCES = SourceCache()


def align(source: StudyDescription, target: Sequence[ObjectiveKind], layer_kinds: set[str]) -> list[int]:
    """For each target objective, the source's matching objective's index; raises
    TransferError naming why the source does not fit."""
    shared = source.table.kind_set & layer_kinds
    if not shared:
        raise TransferError(
            f"transfer_from: study {source.name!r} shares no layer kind with this model "
            f"(its {sorted(source.table.kind_set)}, this one's {sorted(layer_kinds)})")
    free = list(range(len(source.objectives)))
    out: list[int] = []
    for o in target:
        match = next((i for i in free if source.objectives[i].name == o.name), None)
        if match is None:
            match = next((i for i in free if source.objectives[i].matches(o)), None)
        if match is None:
            theirs = ", ".join(f"{s.name} ({s.direction.name.lower()})" for s in source.objectives)
            raise TransferError(
                f"transfer_from: study {source.name!r} measures different objectives "
                f"({theirs}); nothing matches {o.name} ({o.direction.name.lower()})")
        free.remove(match)
        out.append(match)
    return out


def check_sources(storage: BaseStorage, names: Sequence[str], objectives: Sequence[tuple[str, str]],
                  layer_kinds: set[str] | None, cache: SourceCache = SOURCES) -> None:
    """Refuse, before a study starts, sources that cannot be learnt from: ``objectives`` are
    the target's (name, "maximize" | "minimize"); ``layer_kinds`` its model's (None: not
    known yet, as when a spec is submitted before any worker loaded the model)."""
    kinds = [ObjectiveKind(n, StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE)
             for n, d in objectives]
    for name in names:
        description = cache.source(storage, name).description
        align(description, kinds, description.table.kind_set if layer_kinds is None else layer_kinds)


def source_weight(n_target: int, decay: float) -> float:
    """Weight of one source trial when the target has ``n_target`` trials: 1 at the start,
    1/2 once ``decay`` of the target's own have arrived, falling as 1/n after."""
    return decay / (decay + n_target)


@dataclass(frozen=True)
class TransferSet:
    """The sources of one suggestion, in the target's terms.

    Args:
        target: the target study's description.
        param_layers: the target's parameter -> (role, layers).
        features: (n_s, F) source features.
        losses: (n_s, m) normalised source losses, in the target's objective order.
        study: (n_s,) 1-based index of each row's source.
    """

    target: StudyDescription
    param_layers: Mapping[str, tuple[str, tuple[str, ...]]]
    features: np.ndarray
    losses: np.ndarray
    study: np.ndarray

    def point_features(self, encoding: VectorEncoding, points: np.ndarray) -> np.ndarray:
        table = self.target.table
        return aggregate(table, LayerValues.from_points(table, encoding, self.param_layers, points))

    def target_losses(self, values: np.ndarray) -> np.ndarray:
        """The target's objective values as normalised losses (the sources' scale)."""
        return values / self.target.scales(values) * _signs(self.target.objectives)


def param_layers_of(description: StudyDescription, encoding: VectorEncoding) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The target's parameter -> (role, layers), from its stored knobs and layer table."""
    from pydantic import TypeAdapter

    from paretoml.search_space.introspect import ChannelLink, LayerInfo
    from paretoml.search_space.knobs import Knob
    from paretoml.search_space.space import MERGE_PREFIX, JointSpace

    if not description.knobs:
        raise TransferError(f"study {description.name!r} has no stored spec (not made by paretoml)")
    knobs = TypeAdapter(list[Knob]).validate_python(list(description.knobs))
    layers = [_layer_info(row, LayerInfo, ChannelLink) for row in description.table_rows]
    checkpoints = {name.split(":")[0] for name in encoding.distributions if name.startswith(MERGE_PREFIX)}
    space = JointSpace(knobs, layers, n_checkpoints=len(checkpoints))
    return space.param_layers


def _layer_info(row: Mapping[str, Any], info: Any, link: Any) -> Any:
    data = dict(row)
    data["weight_shape"] = tuple(data["weight_shape"])
    raw = data.get("link")
    if raw:
        data["link"] = link(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                               for k, v in raw.items()})
    else:
        data["link"] = None
    return info(**data)


def source_rows(losses: np.ndarray, limit: int) -> np.ndarray:
    """Which source rows join a suggestion's training set: all up to ``limit``; beyond, the
    non-dominated ones (up to half the limit) and the rest evenly spaced. The sampler passes
    ``max_train // 2``: with all 1,000 rows of a source a suggestion took 2.8x a cold one at 60
    own trials, with 400 2.1x, with 200 1.9x (benchmarks/results/transfer-digits-dev-2cores.md)."""
    n = len(losses)
    if n <= limit:
        return np.arange(n)
    from paretoml.surrogates.pareto import non_dominated

    front = np.flatnonzero(non_dominated(losses))[: limit // 2]
    rest = np.setdiff1d(np.arange(n), front)
    spaced = rest[np.unique(np.linspace(0, len(rest) - 1, limit - len(front)).round().astype(int))]
    return np.sort(np.concatenate([front, spaced]))


def transfer_set(study: optuna.Study, encoding: VectorEncoding, names: Sequence[str],
                 cache: SourceCache = SOURCES, limit: int | None = None) -> TransferSet:
    """The sources ``names`` of ``study``, aligned to its objectives (at most ``limit`` rows,
    by ``source_rows``); raises TransferError (one line) for a source that does not fit."""
    target = cache.target(study)
    storage = storage_of(study)
    features, losses, index = [], [], []
    for i, name in enumerate(names, start=1):
        if name == study.study_name:
            raise TransferError(f"transfer_from: study {name!r} is the study itself")
        source = cache.source(storage, name)
        order = align(source.description, target.objectives, target.table.kind_set)
        features.append(source.features)
        losses.append(source.losses[:, order])
        index.append(np.full(len(source.features), float(i)))
    all_losses = np.vstack(losses)
    keep = source_rows(all_losses, limit) if limit is not None else np.arange(len(all_losses))
    return TransferSet(target, cache.param_layers(study, encoding), np.vstack(features)[keep], all_losses[keep],
                       np.concatenate(index)[keep])
