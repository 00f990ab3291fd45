"""Knob kinds: the things a study may turn.

A knob is declared once in a study spec. Per-layer knobs (bitwidth, prune, merge) are
expanded over the layers that introspection finds, one Optuna parameter per layer, block
or shared group; the others become a single parameter each.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Bitwidths the quantizer implements: round-to-nearest integers, and 16 meaning fp16.
SUPPORTED_BITS: frozenset[int] = frozenset({2, 3, 4, 5, 6, 7, 8, 16})
#: Activation bitwidths with a kernel somewhere: 8 (W8A8), 16 (the device's float type).
SUPPORTED_ACT_BITS: frozenset[int] = frozenset({8, 16})
#: KV-cache bits per key or value entry with a kernel (kvkernel's formats): 16 is unquantised.
SUPPORTED_KV_BITS: frozenset[int] = frozenset({2, 4, 8, 16})
#: A KV precision pair as a spec writes it: ``K8V4`` (keys 8 bits, values 4 bits).
KV_PAIR = re.compile(r"^K(\d+)V(\d+)$")
#: Pruning above this leaves too little of a layer to be worth searching.
MAX_PRUNE_RATIO = 0.95

#: recurrent: a weight matrix of nn.GRU / nn.LSTM / nn.RNN (bitwidth knobs only: weight-only quantization)
LayerKind = Literal["linear", "conv", "embedding", "recurrent"]
Grouping = Literal["layer", "block", "shared"]
LrRule = Literal["none", "linear", "sqrt"]
#: How a prune knob removes weights; compare against the names below, never a string.
PruneMethod = Literal["unstructured", "structured", "2:4"]
UNSTRUCTURED: PruneMethod = "unstructured"  # single weights (magnitude)
STRUCTURED: PruneMethod = "structured"  # whole output channels, removed from the tensors
SPARSE_2_4: PruneMethod = "2:4"  # the 2:4 pattern of sparse tensor cores



def checked_bits(value: list[int], supported: frozenset[int], what: str, label: str) -> list[int]:
    """Distinct sorted bitwidths, refusing an empty list or one outside ``supported``: one
    check for the weight and the KV-cache knobs."""
    if not value:
        raise ValueError(f"needs at least one {what}")
    bad = sorted(set(value) - supported)
    if bad:
        raise ValueError(f"{label} {bad} not supported; choose from {sorted(supported)}")
    return sorted(set(value))

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LayerSelector(_Strict):
    """Which introspected layers a per-layer knob attaches to."""

    kinds: list[LayerKind] = Field(default_factory=lambda: ["linear", "conv", "embedding", "recurrent"])
    include: str | None = Field(None, description="regex a layer name must match")
    exclude: str | None = Field(None, description="regex a layer name must not match")

    @field_validator("include", "exclude")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def matches(self, name: str, kind: str) -> bool:
        if kind not in self.kinds:
            return False
        if self.include is not None and not re.search(self.include, name):
            return False
        return self.exclude is None or not re.search(self.exclude, name)


class _PerLayerKnob(_Strict):
    layers: LayerSelector = Field(default_factory=LayerSelector)
    group: Grouping = "layer"
    block_depth: int | None = Field(
        None, ge=1, description="dotted components that name a block; default: the parent module"
    )


class BitwidthKnob(_PerLayerKnob):
    """Weight bitwidth per layer; 16 keeps the layer in half precision."""

    kind: Literal["bitwidth"] = "bitwidth"
    choices: list[int] = Field(default_factory=lambda: [2, 3, 4, 6, 8, 16])

    @field_validator("choices")
    @classmethod
    def _valid_bits(cls, value: list[int]) -> list[int]:
        return checked_bits(value, SUPPORTED_BITS, "bitwidth", "bits")


class ActivationBitsKnob(_PerLayerKnob):
    """Activation bitwidth per layer: 8 quantizes a layer's inputs per token at run time
    (W8A8 kernels: int8 on CPU, fp8 on H100/H200), 16 leaves them in the device's float type."""

    kind: Literal["activation_bits"] = "activation_bits"
    layers: LayerSelector = Field(default_factory=lambda: LayerSelector(kinds=["linear"]))
    choices: list[int] = Field(default_factory=lambda: [8, 16])

    @field_validator("choices")
    @classmethod
    def _valid_bits(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("needs at least one activation bitwidth")
        bad = sorted(set(value) - SUPPORTED_ACT_BITS)
        if bad:
            raise ValueError(f"activation bits {bad} not supported; choose from {sorted(SUPPORTED_ACT_BITS)}")
        return sorted(set(value))


class PruneKnob(_PerLayerKnob):
    """Magnitude pruning ratio per layer: unstructured weights, whole output channels, or
    the 2:4 pattern of sparse tensor cores (then each layer is either dense or 2:4, ratio 0.5)."""

    kind: Literal["prune"] = "prune"
    method: PruneMethod = UNSTRUCTURED
    low: float = 0.0
    high: float = 0.9
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid_range(self) -> PruneKnob:
        if not 0.0 <= self.low < self.high <= MAX_PRUNE_RATIO:
            raise ValueError(
                f"prune ratio range [{self.low}, {self.high}] must satisfy "
                f"0 <= low < high <= {MAX_PRUNE_RATIO}"
            )
        return self


class MergeKnob(_PerLayerKnob):
    """Per-layer coefficients of each task checkpoint relative to the task's base.

    The merged weight is ``(1 - sum(c)) * base + sum(c_k * ckpt_k)``; with one checkpoint
    this is linear interpolation, with several it is task arithmetic.
    """

    kind: Literal["merge"] = "merge"
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _valid_range(self) -> MergeKnob:
        if not -1.0 <= self.low < self.high <= 2.0:
            raise ValueError(f"merge range [{self.low}, {self.high}] must lie in [-1, 2] with low < high")
        return self


def parse_kv_pair(label: str) -> tuple[int, int]:
    """``"K8V4"`` -> ``(8, 4)``; raises ValueError for anything else."""
    match = KV_PAIR.match(label.strip().upper())
    if match is None:
        raise ValueError(f"KV pair {label!r} is not of the form K<bits>V<bits> (e.g. K8V4)")
    key, value = int(match.group(1)), int(match.group(2))
    bad = sorted({key, value} - SUPPORTED_KV_BITS)
    if bad:
        raise ValueError(f"KV pair {label!r}: bits {bad} not supported; choose from {sorted(SUPPORTED_KV_BITS)}")
    return key, value


def kv_pair_label(key_bits: int, value_bits: int) -> str:
    return f"K{key_bits}V{value_bits}"


class KVBitsKnob(_PerLayerKnob):
    """KV-cache precision per attention layer, keys and values apart (KVTuner): keys from
    ``key_choices``, values from ``value_choices``, or, with ``pairs``, each layer takes one
    of the listed pairs (KVTuner's pair pruning, e.g. ``[K16V16, K8V8, K8V4, K4V4, K4V2]``).

    The knob attaches to each attention layer through its key projection, the layer the
    selector picks (``k_proj`` in Llama-like models); the task maps it to its KV cache layer.
    """

    kind: Literal["kv_bits"] = "kv_bits"
    layers: LayerSelector = Field(default_factory=lambda: LayerSelector(kinds=["linear"], include=r"(^|\.)k_proj$"))
    key_choices: list[int] = Field(default_factory=lambda: [2, 4, 8, 16])
    value_choices: list[int] = Field(default_factory=lambda: [2, 4, 8, 16])
    pairs: list[str] | None = Field(None, description="allowed K<bits>V<bits> pairs; overrides the choices")

    @field_validator("key_choices", "value_choices")
    @classmethod
    def _valid_bits(cls, value: list[int]) -> list[int]:
        return checked_bits(value, SUPPORTED_KV_BITS, "KV bitwidth", "KV bits")

    @field_validator("pairs")
    @classmethod
    def _valid_pairs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("pairs, when given, needs at least one K<bits>V<bits> pair")
        parsed = [parse_kv_pair(label) for label in value]
        if len(set(parsed)) != len(parsed):
            raise ValueError("pairs must be distinct")
        return [kv_pair_label(k, v) for k, v in parsed]

    def allowed_pairs(self) -> list[tuple[int, int]]:
        """Every (key bits, value bits) a layer may take."""
        if self.pairs is not None:
            return [parse_kv_pair(label) for label in self.pairs]
        return [(k, v) for k in self.key_choices for v in self.value_choices]


class BatchSizeKnob(_Strict):
    """Fine-tuning batch size, searched over powers of two."""

    kind: Literal["batch_size"] = "batch_size"
    choices: list[int] = Field(default_factory=lambda: [16, 32, 64, 128])

    @field_validator("choices")
    @classmethod
    def _powers_of_two(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("needs at least one batch size")
        bad = [v for v in value if v < 1 or v & (v - 1)]
        if bad:
            raise ValueError(f"batch sizes must be powers of two, got {bad}")
        return sorted(set(value))


class LearningRateKnob(_Strict):
    """Fine-tuning LR: ``base_lr * f(batch / base_batch)`` for the chosen scaling rule.

    ``base_lr`` is fixed, or searched log-uniformly when ``base_lr_range`` is given.
    """

    kind: Literal["learning_rate"] = "learning_rate"
    base_lr: float = Field(1e-3, gt=0)
    base_lr_range: tuple[float, float] | None = None
    base_batch: int = Field(32, ge=1)
    rule: LrRule = "linear"

    @field_validator("base_lr_range", mode="before")
    @classmethod
    def _pair_from_list(cls, value: object) -> object:
        """YAML and JSON (and the spec stored with a study) give the pair as a list; strict
        mode alone would refuse it, so no spec with a searched LR could be run or resumed."""
        return tuple(value) if isinstance(value, list) else value

    @field_validator("base_lr_range")
    @classmethod
    def _valid_lr_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] < value[1]:
            raise ValueError("base_lr_range must be (low, high) with 0 < low < high")
        return value


class FloatKnob(_Strict):
    kind: Literal["float"] = "float"
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid_range(self) -> FloatKnob:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale needs low > 0 and no step")
        return self


class IntKnob(_Strict):
    kind: Literal["int"] = "int"
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _valid_range(self) -> IntKnob:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("log scale needs low > 0 and step 1")
        return self


class CategoricalKnob(_Strict):
    kind: Literal["categorical"] = "categorical"
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    choices: list[str | int | float | bool]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, value: list[str | int | float | bool]) -> list[str | int | float | bool]:
        if not value:
            raise ValueError("needs at least one choice")
        if len(set(map(repr, value))) != len(value):
            raise ValueError("choices must be distinct")
        return value


Knob = Annotated[
    Union[
        BitwidthKnob,
        ActivationBitsKnob,
        KVBitsKnob,
        PruneKnob,
        MergeKnob,
        BatchSizeKnob,
        LearningRateKnob,
        FloatKnob,
        IntKnob,
        CategoricalKnob,
    ],
    Field(discriminator="kind"),
]
PerLayerKnob = Union[BitwidthKnob, ActivationBitsKnob, KVBitsKnob, PruneKnob, MergeKnob]


def scaled_learning_rate(base_lr: float, batch_size: int, base_batch: int, rule: LrRule) -> float:
    """The LR scaling rules of Goyal et al. (linear) and Krizhevsky / Hoffer et al. (sqrt)."""
    ratio = batch_size / base_batch
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"unknown LR scaling rule {rule!r}")
