"""JointSpace: knobs x layers -> Optuna distributions, typed configs and numeric vectors."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from paretoml.search_space.encoding import VectorEncoding
from paretoml.search_space.introspect import RECURRENT, LayerInfo, group_layers
from paretoml.search_space.knobs import (
    ActivationBitsKnob,
    BatchSizeKnob,
    BitwidthKnob,
    CategoricalKnob,
    FloatKnob,
    IntKnob,
    Knob,
    KVBitsKnob,
    kv_pair_label,
    parse_kv_pair,
    LearningRateKnob,
    MergeKnob,
    PruneKnob,
    PruneMethod,
    SPARSE_2_4,
    STRUCTURED,
    UNSTRUCTURED,
    scaled_learning_rate,
)

BITS_PREFIX = "bits:"
ACT_BITS_PREFIX = "abits:"
#: The ratio of the 2:4 pattern: a layer under a 2:4 prune knob is dense (0) or 2:4 (this).
SEMI_STRUCTURED_RATIO = 0.5
#: KV-cache bits of an attention layer: keys and values apart, or one allowed pair
KV_KEY_PREFIX = "kbits:"
KV_VALUE_PREFIX = "vbits:"
KV_PAIR_PREFIX = "kv:"
PRUNE_PREFIX = "prune:"
MERGE_PREFIX = "merge"  # merge{k}:{group}
BATCH_PARAM = "batch_size"
BASE_LR_PARAM = "base_lr"


@dataclass(frozen=True)
class TrialConfig:
    """What one trial applies to the model, expanded to individual layers."""

    bits: dict[str, int] = field(default_factory=dict)
    prune: dict[str, float] = field(default_factory=dict)
    prune_method: dict[str, PruneMethod] = field(default_factory=dict)
    merge: dict[str, tuple[float, ...]] = field(default_factory=dict)
    batch_size: int | None = None
    learning_rate: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    #: activation bits per layer (8); layers not named keep float activations
    act_bits: dict[str, int] = field(default_factory=dict)
    #: KV-cache (key bits, value bits) per attention layer, named by its key projection
    kv_bits: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["merge"] = {k: list(v) for k, v in self.merge.items()}
        data["kv_bits"] = {k: list(v) for k, v in self.kv_bits.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        return cls(
            bits={k: int(v) for k, v in data.get("bits", {}).items()},
            prune={k: float(v) for k, v in data.get("prune", {}).items()},
            prune_method=dict(data.get("prune_method", {})),
            merge={k: tuple(float(c) for c in v) for k, v in data.get("merge", {}).items()},
            batch_size=data.get("batch_size"),
            learning_rate=data.get("learning_rate"),
            hparams=dict(data.get("hparams", {})),
            act_bits={k: int(v) for k, v in data.get("act_bits", {}).items()},
            kv_bits={k: (int(v[0]), int(v[1])) for k, v in data.get("kv_bits", {}).items()},
        )


@dataclass(frozen=True)
class _Slot:
    """One Optuna parameter and the layers it drives."""

    name: str
    distribution: BaseDistribution
    role: str  # bits | prune | merge | batch | base_lr | hparam
    layers: tuple[str, ...] = ()
    checkpoint: int = 0
    method: PruneMethod | None = None  # prune slots only


class JointSpace:
    """The joint search space of one study over one model.

    Parameter names are stable and readable (``bits:conv1``, ``prune:features.0``,
    ``merge0:fc1``) so that a study can be read by other Optuna tools.
    """

    def __init__(
        self,
        knobs: Sequence[Knob],
        layers: Sequence[LayerInfo],
        n_checkpoints: int = 0,
        allowed: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    ) -> None:
        """``allowed`` (role -> layer -> values, see :meth:`layer_choices`) keeps only those
        choices of the per-layer knobs: the formats with a kernel for each layer's shape on
        the study's device. What it removes is listed in :attr:`dropped`."""
        self.layers: tuple[LayerInfo, ...] = tuple(layers)
        self.n_checkpoints = n_checkpoints
        self.notes: list[str] = []
        #: parameter -> the knob's choices removed from it (no kernel on the device)
        self.dropped: dict[str, list[Any]] = {}
        #: layer -> the bits with an A8 kernel (``a8_bits``) or a 2:4 kernel (``sparse_bits``):
        #: a pairing outside them runs float activations, or dense (see config_from_params)
        self._pairs: dict[str, dict[str, set[int]]] = {
            role: {name: set(values) for name, values in (allowed or {}).get(role, {}).items()}
            for role in ("a8_bits", "sparse_bits")}
        self._lr_knob: LearningRateKnob | None = None
        self._batch_knob: BatchSizeKnob | None = None
        self._slots: list[_Slot] = []
        taken: dict[str, set[str]] = {}
        for knob in knobs:
            if isinstance(knob, (BitwidthKnob, ActivationBitsKnob, KVBitsKnob, PruneKnob, MergeKnob)):
                self._add_per_layer(knob, taken)
            elif isinstance(knob, BatchSizeKnob):
                self._single(knob, "batch", BATCH_PARAM, CategoricalDistribution(knob.choices))
                self._batch_knob = knob
            elif isinstance(knob, LearningRateKnob):
                if self._lr_knob is not None:
                    raise ValueError("knobs: only one learning_rate knob is allowed")
                self._lr_knob = knob
                if knob.base_lr_range is not None:
                    low, high = knob.base_lr_range
                    self._single(knob, "base_lr", BASE_LR_PARAM, FloatDistribution(low, high, log=True))
            elif isinstance(knob, FloatKnob):
                dist = FloatDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
                self._single(knob, "hparam", knob.name, dist)
            elif isinstance(knob, IntKnob):
                dist = IntDistribution(knob.low, knob.high, log=knob.log, step=knob.step)
                self._single(knob, "hparam", knob.name, dist)
            elif isinstance(knob, CategoricalKnob):
                self._single(knob, "hparam", knob.name, CategoricalDistribution(knob.choices))
            else:  # pragma: no cover - the Knob union is closed
                raise TypeError(f"unknown knob {knob!r}")
        if not self._slots:
            raise ValueError("knobs: the space is empty (no knob matched any layer)")
        if allowed:
            self._keep_allowed(allowed)

    def _keep_allowed(self, allowed: Mapping[str, Mapping[str, Sequence[Any]]]) -> None:
        kept: list[_Slot] = []
        for slot in self._slots:
            role = _choice_role(slot)
            per_layer = allowed.get(role or "", {})
            if role is None or not any(m in per_layer for m in slot.layers):
                kept.append(slot)
                continue
            choices = list(slot.distribution.choices)  # type: ignore[attr-defined]
            keep = [c for c in choices if all(c in per_layer[m] for m in slot.layers if m in per_layer)]
            if keep != choices:
                self.dropped[slot.name] = [c for c in choices if c not in keep]
            if not keep:  # the knob does not reach this layer here: it stays in the float type
                self.notes.append(f"{slot.name}: no choice ({', '.join(map(str, choices))}) has a kernel of its "
                                  "own format for the layer's shape on this device; the layer stays unquantized")
                continue
            kept.append(slot if keep == choices else _Slot(slot.name, CategoricalDistribution(keep), slot.role,
                                                           slot.layers, slot.checkpoint, slot.method))
        if not kept:
            raise ValueError("knobs: no knob choice has a kernel of its own format on the study's device; "
                             "widen the choices (16 runs everywhere) or set deploy.emulate: true")
        self._slots = kept

    def layer_choices(self) -> dict[str, dict[str, list[Any]]]:
        """The per-layer choices a device may not run, by role (``bits``, ``act_bits``,
        ``sparse_2_4``): what :mod:`paretoml.objectives.deploy` checks against its kernels."""
        found: dict[str, dict[str, list[Any]]] = {}
        for slot in self._slots:
            role = _choice_role(slot)
            if role is not None:
                for member in slot.layers:
                    found.setdefault(role, {})[member] = list(slot.distribution.choices)  # type: ignore[attr-defined]
        return found

    def dropped_line(self, device: str) -> str | None:
        """One line naming the choices dropped for ``device``, or None."""
        if not self.dropped:
            return None
        shown = "; ".join(f"{name} {', '.join(map(str, values))}" for name, values in self.dropped.items())
        return f"choices with no kernel of their own format on {device}, not offered: {shown}"

    # -- construction -------------------------------------------------------------------
    def _single(self, knob: Knob, role: str, name: str, dist: BaseDistribution) -> None:
        if any(slot.name == name for slot in self._slots):
            raise ValueError(f"knobs: parameter {name!r} is declared twice")
        self._slots.append(_Slot(name, dist, role))

    def _add_per_layer(self, knob: BitwidthKnob | ActivationBitsKnob | KVBitsKnob | PruneKnob | MergeKnob,
                       taken: dict[str, set[str]]) -> None:
        role = {"bitwidth": "bits", "activation_bits": "act_bits", "kv_bits": "kv", "prune": "prune",
                "merge": "merge"}[knob.kind]
        pattern = knob.layers.include
        if pattern is not None and not any(re.search(pattern, layer.name) for layer in self.layers):
            names = [layer.name for layer in self.layers]
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} layers)" if len(names) > 6 else "")
            raise ValueError(f"knobs: {knob.kind} knob's include pattern {pattern!r} matches no layer; "
                             f"the model's layers are: {shown}")
        selected: list[str] = []
        skipped_recurrent: list[str] = []
        for layer in self.layers:
            if not knob.layers.matches(layer.name, layer.kind):
                continue
            if layer.kind == RECURRENT and not isinstance(knob, BitwidthKnob):
                skipped_recurrent.append(layer.name)  # weight-only quantization: its rows are gates
                continue
            if isinstance(knob, PruneKnob) and knob.method == STRUCTURED and not layer.structured_ok:
                self.notes.append(
                    f"structured pruning skips {layer.name}: its output channels feed a "
                    "branch, a residual or the model output and cannot be removed"
                )
                continue
            if isinstance(knob, PruneKnob) and layer.kind == "embedding":
                continue
            if isinstance(knob, PruneKnob) and knob.method == SPARSE_2_4 and (
                    layer.kind != "linear" or layer.weight_shape[1] % 4):
                self.notes.append(f"2:4 pruning skips {layer.name}: only Linear layers with a multiple of 4 inputs")
                continue
            if layer.name in taken.setdefault(role, set()):
                raise ValueError(f"knobs: layer {layer.name!r} is selected by two {knob.kind} knobs")
            taken[role].add(layer.name)
            selected.append(layer.name)
        if skipped_recurrent:
            self.notes.append(f"{knob.kind} knob skips {len(skipped_recurrent)} recurrent weight matrices "
                              f"({skipped_recurrent[0]}, ...): they take bitwidth knobs only")
        if not selected:
            self.notes.append(f"{knob.kind} knob matched no layer")
            return
        groups = group_layers(selected, knob.group, knob.block_depth)
        if isinstance(knob, BitwidthKnob):
            for key, members in groups.items():
                self._slots.append(
                    _Slot(f"{BITS_PREFIX}{key}", CategoricalDistribution(knob.choices), role, tuple(members))
                )
        elif isinstance(knob, ActivationBitsKnob):
            for key, members in groups.items():
                self._slots.append(
                    _Slot(f"{ACT_BITS_PREFIX}{key}", CategoricalDistribution(knob.choices), role, tuple(members))
                )
        elif isinstance(knob, KVBitsKnob):
            for key, members in groups.items():
                if knob.pairs is not None:
                    self._slots.append(_Slot(f"{KV_PAIR_PREFIX}{key}", CategoricalDistribution(knob.pairs),
                                             "kv_pair", tuple(members)))
                else:
                    self._slots.append(_Slot(f"{KV_KEY_PREFIX}{key}", CategoricalDistribution(knob.key_choices),
                                             "kv_key", tuple(members)))
                    self._slots.append(_Slot(f"{KV_VALUE_PREFIX}{key}",
                                             CategoricalDistribution(knob.value_choices), "kv_value", tuple(members)))
        elif isinstance(knob, PruneKnob):
            for key, members in groups.items():
                dist: BaseDistribution = FloatDistribution(knob.low, knob.high, step=knob.step)
                if knob.method == SPARSE_2_4:
                    dist = CategoricalDistribution([0.0, SEMI_STRUCTURED_RATIO])
                self._slots.append(
                    _Slot(f"{PRUNE_PREFIX}{key}", dist, role, tuple(members), method=knob.method)
                )
        else:
            if self.n_checkpoints < 1:
                raise ValueError("knobs: a merge knob needs a task with checkpoints to merge")
            for key, members in groups.items():
                for k in range(self.n_checkpoints):
                    dist = FloatDistribution(knob.low, knob.high)
                    self._slots.append(
                        _Slot(f"{MERGE_PREFIX}{k}:{key}", dist, role, tuple(members), checkpoint=k)
                    )

    # -- Optuna side ---------------------------------------------------------------------
    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {slot.name: slot.distribution for slot in self._slots}

    @property
    def param_names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    def suggest(self, trial: optuna.Trial) -> TrialConfig:
        params = {slot.name: _suggest(trial, slot.name, slot.distribution) for slot in self._slots}
        return self.config_from_params(params)

    def config_from_params(self, params: Mapping[str, Any]) -> TrialConfig:
        """Expand Optuna parameters (one per group) into a per-layer config."""
        missing = [slot.name for slot in self._slots if slot.name not in params]
        if missing:
            raise KeyError(f"parameters missing from the trial: {missing}")
        bits: dict[str, int] = {}
        act_bits: dict[str, int] = {}
        kv_key: dict[str, int] = {}
        kv_value: dict[str, int] = {}
        prune: dict[str, float] = {}
        method: dict[str, PruneMethod] = {}
        merge: dict[str, list[float]] = {}
        hparams: dict[str, Any] = {}
        batch = None
        base_lr = self._lr_knob.base_lr if self._lr_knob else None
        for slot in self._slots:
            value = params[slot.name]
            if slot.role == "bits":
                bits.update({layer: int(value) for layer in slot.layers})
            elif slot.role == "act_bits":
                if int(value) < 16:
                    act_bits.update({layer: int(value) for layer in slot.layers})
            elif slot.role == "kv_pair":
                key_bits, value_bits = parse_kv_pair(str(value))
                kv_key.update({layer: key_bits for layer in slot.layers})
                kv_value.update({layer: value_bits for layer in slot.layers})
            elif slot.role == "kv_key":
                kv_key.update({layer: int(value) for layer in slot.layers})
            elif slot.role == "kv_value":
                kv_value.update({layer: int(value) for layer in slot.layers})
            elif slot.role == "prune":
                ratio = snap_to_step(float(value), slot.distribution)
                prune.update({layer: ratio for layer in slot.layers})
                method.update({layer: slot.method for layer in slot.layers})
            elif slot.role == "merge":
                for layer in slot.layers:
                    merge.setdefault(layer, [0.0] * self.n_checkpoints)[slot.checkpoint] = float(value)
            elif slot.role == "batch":
                batch = int(value)
            elif slot.role == "base_lr":
                base_lr = float(value)
            else:
                hparams[slot.name] = snap_to_step(value, slot.distribution)
        lr = None
        if self._lr_knob is not None and base_lr is not None:
            used_batch = batch if batch is not None else self._lr_knob.base_batch
            lr = scaled_learning_rate(base_lr, used_batch, self._lr_knob.base_batch, self._lr_knob.rule)
        return self._dense_where_unpaired(TrialConfig(
            bits=bits,
            prune=prune,
            prune_method=method,
            merge={k: tuple(v) for k, v in merge.items()},
            batch_size=batch,
            learning_rate=lr,
            hparams=hparams,
            act_bits=self._paired(act_bits, bits, "a8_bits"),
            kv_bits={layer: (kv_key[layer], kv_value[layer]) for layer in kv_key},
        ))

    def _paired(self, act_bits: dict[str, int], bits: Mapping[str, int], role: str) -> dict[str, int]:
        """Activation bits only where the layer's weight bits have a kernel for them (runtime
        deployment: W16A8 has none, so such a layer runs float activations)."""
        pairs = self._pairs[role]
        return {n: a for n, a in act_bits.items() if n not in pairs or bits.get(n, 32) in pairs[n]}

    def _dense_where_unpaired(self, config: TrialConfig) -> TrialConfig:
        """2:4 only where the layer's weight bits have a 2:4 kernel; elsewhere the layer stays dense."""
        pairs = self._pairs["sparse_bits"]
        dense = {n for n, m in config.prune_method.items()
                 if m == SPARSE_2_4 and n in pairs and config.bits.get(n, 32) not in pairs[n]}
        if not dense:
            return config
        return replace(config, prune={n: (0.0 if n in dense else r) for n, r in config.prune.items()})

    def uniform_params(self, bits: int | None = None, prune: float | None = None,
                       merge: float | None = None, act_bits: int | None = None,
                       kv: tuple[int, int] | None = None) -> dict[str, Any]:
        """Parameters setting every per-layer knob alike: baselines and sanity points.

        Knobs given no value take their lowest choice (batch), range start (prune, merge),
        highest (activation bits: float activations; KV bits: the widest pair) or midpoint
        (other hyperparameters). ``kv`` is (key bits, value bits) for every attention layer.
        """
        params: dict[str, Any] = {}
        for slot in self._slots:
            dist = slot.distribution
            if slot.role in ("kv_pair", "kv_key", "kv_value"):
                params[slot.name] = _kv_value(slot.role, dist, kv)
            elif slot.role == "act_bits":
                act_bits = self._nearest(slot, act_bits)
                if act_bits is not None and act_bits not in dist.choices:  # type: ignore[attr-defined]
                    raise ValueError(f"activation bits {act_bits} is not among the knob's choices {dist.choices}")  # type: ignore[attr-defined]
                params[slot.name] = max(dist.choices) if act_bits is None else act_bits  # type: ignore[attr-defined]
            elif slot.role == "prune" and slot.method == SPARSE_2_4:
                params[slot.name] = SEMI_STRUCTURED_RATIO if prune else 0.0
            elif slot.role == "bits" and bits is not None:
                chosen = self._nearest(slot, bits)
                if chosen not in dist.choices:  # type: ignore[attr-defined]
                    raise ValueError(f"bits {bits} is not among the knob's choices {dist.choices}")  # type: ignore[attr-defined]
                params[slot.name] = chosen
            elif slot.role == "prune" and prune is not None:
                params[slot.name] = float(np.clip(prune, dist.low, dist.high))  # type: ignore[attr-defined]
            elif slot.role == "merge" and merge is not None:
                params[slot.name] = float(np.clip(merge, dist.low, dist.high))  # type: ignore[attr-defined]
            elif slot.role in ("bits", "prune", "merge", "batch"):
                params[slot.name] = _low_end(dist)
            else:
                params[slot.name] = _midpoint(dist)
        return params

    def _nearest(self, slot: _Slot, value: int | None) -> int | None:
        """A value the device dropped from ``slot``: the narrowest kept choice above it
        (else the widest), so a uniform baseline still runs where some layers cannot."""
        if value is None or value not in self.dropped.get(slot.name, []):
            return value
        choices = sorted(slot.distribution.choices)  # type: ignore[attr-defined]
        return next((c for c in choices if c > value), choices[-1])

    def with_layer_bits(self, params: Mapping[str, Any], bits: Mapping[str, int]) -> dict[str, Any]:
        """``params`` with bitwidth knobs set from per-layer bits (a shared group takes the
        widest of its layers', so no layer gets fewer bits than asked)."""
        out = dict(params)
        for slot in self._slots:
            if slot.role == "bits":
                values = [bits[layer] for layer in slot.layers if layer in bits]
                if values:  # a choice the device dropped: the narrowest kept one above it
                    out[slot.name] = self._nearest(slot, max(values))
        return out

    def with_layer_prune(self, params: Mapping[str, Any], prune: Mapping[str, float]) -> dict[str, Any]:
        """``params`` with unstructured prune knobs set from per-layer ratios (a shared group
        takes the smallest of its layers', so no layer is pruned more than asked), clipped
        to each knob's range."""
        out = dict(params)
        for slot in self._slots:
            if slot.role == "prune" and slot.method == UNSTRUCTURED:
                values = [prune[layer] for layer in slot.layers if layer in prune]
                if values:
                    dist = slot.distribution
                    out[slot.name] = float(np.clip(min(values), dist.low, dist.high))  # type: ignore[attr-defined]
        return out

    def with_allocation(self, params: Mapping[str, Any],
                        allocation: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
        """``params`` with bits and unstructured pruning set from per-layer ``(bits, ratio)``
        pairs, such as the sensitivity allocator's."""
        bits = {layer: b for layer, (b, _) in allocation.items()}
        prune = {layer: r for layer, (_, r) in allocation.items()}
        return self.with_layer_prune(self.with_layer_bits(params, bits), prune)

    @property
    def param_layers(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Parameter name -> (role, the layers it drives): how a parameter's value lands on
        layers, for readers that describe configurations per layer (bits, act_bits, prune,
        merge, batch, base_lr, hparam)."""
        return {slot.name: (slot.role, slot.layers) for slot in self._slots}

    @property
    def covered_layers(self) -> list[str]:
        """Layers that some per-layer knob (bits, activation bits, prune, merge) turns."""
        return list(dict.fromkeys(layer for slot in self._slots for layer in slot.layers))

    @property
    def bits_layers(self) -> list[str]:
        return [layer for slot in self._slots if slot.role == "bits" for layer in slot.layers]

    @property
    def kv_layers(self) -> list[str]:
        """The attention layers (by key projection) a KV-bits knob drives."""
        return list(dict.fromkeys(layer for slot in self._slots if slot.role in ("kv_pair", "kv_key")
                                  for layer in slot.layers))

    def kv_pairs(self) -> list[tuple[int, int]]:
        """Every (key bits, value bits) the KV knob allows a layer, widest first."""
        pairs: set[tuple[int, int]] = set()
        keys = values = None
        for slot in self._slots:
            choices = slot.distribution.choices  # type: ignore[attr-defined]
            if slot.role == "kv_pair":
                pairs.update(parse_kv_pair(str(c)) for c in choices)
            elif slot.role == "kv_key":
                keys = choices
            elif slot.role == "kv_value":
                values = choices
        if keys is not None and values is not None:
            pairs.update((int(k), int(v)) for k in keys for v in values)
        return sorted(pairs, key=lambda p: (-(p[0] + p[1]), -p[0]))

    def with_layer_kv(self, params: Mapping[str, Any], kv: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
        """``params`` with KV knobs set from per-layer (key bits, value bits) pairs (a shared
        group takes the widest of its layers'). A pair a knob does not allow raises."""
        out = dict(params)
        for slot in self._slots:
            values = [kv[layer] for layer in slot.layers if layer in kv]
            if not values or slot.role not in ("kv_pair", "kv_key", "kv_value"):
                continue
            pair = (max(k for k, _ in values), max(v for _, v in values))
            out[slot.name] = _kv_value(slot.role, slot.distribution, pair)
        return out

    @property
    def unstructured_prune_layers(self) -> list[str]:
        return [layer for slot in self._slots
                if slot.role == "prune" and slot.method == UNSTRUCTURED for layer in slot.layers]

    # -- numeric encoding ----------------------------------------------------------------
    @property
    def encoding(self) -> VectorEncoding:
        return VectorEncoding(self.distributions)

    @property
    def vector_size(self) -> int:
        return self.encoding.size

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """Map parameters to ``[0, 1]^d`` (see :mod:`paretoml.search_space.encoding`)."""
        return self.encoding.encode(params)

    def decode(self, vector: np.ndarray) -> dict[str, Any]:
        """Inverse of :meth:`encode`, snapping to the nearest valid value."""
        return self.encoding.decode(vector)


#: Digits a snapped value keeps: enough for any step a spec gives, few enough to drop the
#: binary noise of ``low + k * step`` (0.1 * 6 = 0.6000000000000001).
_SNAP_DIGITS = 12


def _choice_role(slot: _Slot) -> str | None:
    """The role name of a slot whose choices depend on the device's kernels, else None."""
    if slot.role in ("bits", "act_bits"):
        return slot.role
    if slot.role == "prune" and slot.method == SPARSE_2_4:
        return "sparse_2_4"
    return None


def snap_to_step(value: Any, dist: BaseDistribution) -> Any:
    """``value`` on the grid of a stepped float distribution, without float noise, so that a
    stored config reads ``0.6`` rather than ``0.6000000000000001``; other values unchanged."""
    if not isinstance(dist, FloatDistribution) or dist.step is None or isinstance(value, bool):
        return value
    k = round((float(value) - dist.low) / dist.step)
    return round(min(max(dist.low + k * dist.step, dist.low), dist.high), _SNAP_DIGITS)


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")


def _kv_value(role: str, dist: BaseDistribution, kv: tuple[int, int] | None) -> Any:
    """The value of one KV slot for the pair ``kv`` (None: the widest the slot allows)."""
    choices = dist.choices  # type: ignore[attr-defined]
    if role == "kv_pair":
        if kv is None:
            return max(choices, key=lambda c: sum(parse_kv_pair(str(c))))
        label = kv_pair_label(*kv)
        if label not in choices:
            raise ValueError(f"KV pair {label} is not among the knob's pairs {list(choices)}")
        return label
    if kv is None:
        return max(choices)
    bits = kv[0] if role == "kv_key" else kv[1]
    if bits not in choices:
        raise ValueError(f"KV bits {bits} is not among the knob's choices {list(choices)}")
    return bits


def _midpoint(dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    low, high = dist.low, dist.high  # type: ignore[attr-defined]
    mid = math.sqrt(low * high) if dist.log else low + (high - low) / 2  # type: ignore[attr-defined]
    step = dist.step  # type: ignore[attr-defined]
    if step is not None:
        mid = low + round((mid - low) / step) * step
    return int(round(mid)) if isinstance(dist, IntDistribution) else float(mid)


def _low_end(dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    return dist.low  # type: ignore[attr-defined]
