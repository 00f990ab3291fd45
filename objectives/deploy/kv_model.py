"""A causal LM that carries its per-layer KV-cache formats: every cache it makes is quantised.

A trial's ``kv_bits`` (key bits, value bits per attention layer, named by the layer's key
projection) become one :class:`KVFormat` per decoder layer, stored on the model. The model's
class is swapped for a subclass whose ``generate()`` starts from :func:`new_cache` when the
caller passes no cache, so the exported and reloaded model generates with the quantised
cache as the trial was scored with it; the model's attention is switched to the one that
reads that cache (:data:`KV_ATTENTION`, plain SDPA for any other cache). The cache itself, its quantisation (keys per
channel, values per token, KIVI) and the attention that reads it are
:mod:`paretoml.objectives.deploy.kv_cache`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # kv_cache imports transformers, an optional extra: loaded when used
    from paretoml.objectives.deploy.kv_cache import KVFormat

#: the attribute of a model holding its per-layer KV formats (a list, one per decoder layer)
KV_FORMATS_ATTR = "paretoml_kv_formats"
FULL = 16


def attention_layer_index(model: nn.Module, key_projection: str) -> int:
    """The decoder layer (cache index) of the attention module owning ``key_projection``."""
    parent = model.get_submodule(key_projection.rpartition(".")[0])
    index = getattr(parent, "layer_idx", None)
    if index is None:
        raise ValueError(f"{key_projection!r} is not in an attention module with a layer_idx")
    return int(index)


def num_cache_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    if layers is None:
        raise ValueError("the model's config does not say its number of layers")
    return int(layers)


def kv_formats(model: nn.Module, kv_bits: Mapping[str, Sequence[int]]) -> list[KVFormat]:
    """One format per decoder layer: ``kv_bits``'s where named, unquantised elsewhere."""
    from paretoml.objectives.deploy.kv_cache import KVFormat

    formats = [KVFormat(FULL, FULL) for _ in range(num_cache_layers(model))]
    for name, (key_bits, value_bits) in kv_bits.items():
        formats[attention_layer_index(model, name)] = KVFormat(int(key_bits), int(value_bits))
    return formats


def formats_of(model: nn.Module) -> list[KVFormat] | None:
    """The formats attached to ``model`` (through a deployment wrapper's ``inner``), if any."""
    inner = getattr(model, "inner", model)
    return getattr(inner, KV_FORMATS_ATTR, None)


def is_quantised(formats: Sequence[KVFormat] | None) -> bool:
    return formats is not None and any(f.key_bits < FULL or f.value_bits < FULL for f in formats)


def new_cache(model: nn.Module) -> Any:
    """An empty cache for one generation with ``model``: quantised per layer as attached,
    else the transformers ``DynamicCache``."""
    formats = formats_of(model)
    if is_quantised(formats):
        from paretoml.objectives.deploy.kv_cache import QuantizedKVCache

        return QuantizedKVCache(list(formats))  # type: ignore[arg-type]
    from transformers import DynamicCache

    return DynamicCache()


class _QuantisedCacheLM:
    """Mixin: ``generate()`` without a cache given starts from the model's quantised one."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("cache", kwargs.get("past_key_values"))
        if given is None and is_quantised(getattr(self, KV_FORMATS_ATTR, None)):
            kwargs.pop("past_key_values", None)
            kwargs["cache" if _takes_cache(self) else "past_key_values"] = new_cache(self)  # type: ignore[arg-type]
        return super().generate(*args, **kwargs)  # type: ignore[misc]


def _takes_cache(model: Any) -> bool:
    """Whether the model's ``forward`` names its cache ``cache`` (transformers >= 5.2x)."""
    import inspect

    return "cache" in inspect.signature(type(model).forward).parameters


_SUBCLASSES: dict[type, type] = {}


def attach_kv_formats(model: nn.Module, kv_bits: Mapping[str, Sequence[int]]) -> nn.Module:
    """Give ``model`` (in place) the per-layer formats of ``kv_bits``; returns it."""
    cls = type(model)
    if not issubclass(cls, _QuantisedCacheLM):
        if cls not in _SUBCLASSES:
            _SUBCLASSES[cls] = type(f"KVQuantised{cls.__name__}", (_QuantisedCacheLM, cls), {})
        model.__class__ = _SUBCLASSES[cls]
    from paretoml.objectives.deploy.kv_cache import KV_ATTENTION, register_kv_attention

    setattr(model, KV_FORMATS_ATTR, kv_formats(model, kv_bits))
    register_kv_attention()
    model.set_attn_implementation(KV_ATTENTION)
    return model
