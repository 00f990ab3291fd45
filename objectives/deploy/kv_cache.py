"""A quantised KV cache, one format per decoder layer, and the attention that reads it.

Scheme (KIVI, Liu et al. 2024): keys are quantised **per channel** over groups of
``group`` consecutive tokens (keys have outlier channels, so a scale per channel keeps them),
values **per token** over the whole head (attention mixes values per token, so a per-token
error is what the output sees). Both are asymmetric: ``x ~ code * scale + zero`` with
``code`` in ``[0, 2^b - 1]`` and fp16 ``scale`` and ``zero``.

Residual window: the tokens of the current, incomplete key group (fewer than ``group``) stay
in full precision, for keys and values alike, and are quantised together when the group
completes. So the newest < ``group`` tokens are exact (KIVI keeps a residual window for the
same reason; ours is one group, which keeps the storage one fixed-size buffer a CUDA graph
can write into).

Packed storage, per layer and KV head: ``b``-bit codes, ``8 / b`` to a byte, in the order
:data:`SLOT_ORDER` gives (the order the Triton append kernel's split-based packing yields;
the decode kernel multiplies each byte slot with the query channels it holds, so it needs
no shuffles); 16 bits means the model's own dtype, unquantised.

:class:`QuantizedKVCache` is a ``transformers`` :class:`~transformers.Cache` whose layers each
hold their own :class:`KVFormat`; :data:`KV_ATTENTION` is the attention implementation that
reads it (register with :func:`register_kv_attention`, then
``model.set_attn_implementation(KV_ATTENTION)``). On CUDA a decode step (one new token, no
padding mask) runs the Triton kernel of :mod:`.kv_attention_triton`, which reads the packed
codes directly and is CUDA-graph safe; prefill, padded batches and CPU dequantise and call
SDPA (:func:`attention_backend` says which, so a CPU latency can be labelled estimated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

#: bit widths a KV format may have; 16 is the model's dtype, unquantised
KV_BITS: tuple[int, ...] = (2, 4, 8, 16)
#: tokens per key group (KIVI's default); also the full-precision residual window and the
#: Triton kernel's tile. 128 is faster on the H200 (K4V4 at 128 x 8192: ~5.9 ms for 30 layers
#: against 10.1 ms at 32, benchmarks/results/kv-attention-h200.md) but leaves up to 127 newest
#: tokens unquantised.
DEFAULT_GROUP = 32
#: name of the attention implementation registered with transformers
KV_ATTENTION = "paretoml_kv"
#: which attention path reads the cache on a device
TRITON_BACKEND = "triton"
DEQUANT_SDPA_BACKEND = "dequant+sdpa"
#: bytes of one stored fp16 scale or zero point
_SCALE_BYTES = 2
#: for codes per byte -> the byte slot of each of a group's channels (see module docstring)
SLOT_ORDER: dict[int, tuple[int, ...]] = {1: (0,), 2: (0, 1), 4: (0, 2, 1, 3)}


@dataclass(frozen=True)
class KVFormat:
    """The precision of one layer's keys and values.

    Args:
        key_bits: bits per key element, one of :data:`KV_BITS` (16 = unquantised).
        value_bits: bits per value element, likewise.
    """

    key_bits: int = 16
    value_bits: int = 16

    def __post_init__(self) -> None:
        for name, bits in (("key_bits", self.key_bits), ("value_bits", self.value_bits)):
            if bits not in KV_BITS:
                raise ValueError(f"{name} must be one of {KV_BITS}, got {bits!r}")

    @property
    def label(self) -> str:
        return f"K{self.key_bits}V{self.value_bits}"

    @property
    def quantized(self) -> bool:
        return self.key_bits < 16 or self.value_bits < 16

    @classmethod
    def parse(cls, label: str) -> KVFormat:
        """``"K8V4"`` -> ``KVFormat(8, 4)``."""
        text = label.strip().upper()
        if not text.startswith("K") or "V" not in text:
            raise ValueError(f"a KV format reads like 'K8V4', got {label!r}")
        k, v = text[1:].split("V", 1)
        return cls(int(k), int(v))


BF16_FORMAT = KVFormat(16, 16)


# ----------------------------------------------------------------------------------- bytes
def key_bytes_per_token(bits: int, head_dim: int, group: int = DEFAULT_GROUP, dtype_bytes: int = 2) -> float:
    """Bytes one KV head's key of one token takes, its share of the group's scales included."""
    if bits == 16:
        return float(head_dim * dtype_bytes)
    return head_dim * bits / 8 + 2 * _SCALE_BYTES * head_dim / group


def value_bytes_per_token(bits: int, head_dim: int, dtype_bytes: int = 2) -> float:
    """Bytes one KV head's value of one token takes, its scale and zero point included."""
    if bits == 16:
        return float(head_dim * dtype_bytes)
    return head_dim * bits / 8 + 2 * _SCALE_BYTES


def bytes_per_token(formats: Sequence[KVFormat] | KVFormat, num_kv_heads: int, head_dim: int,
                    group: int = DEFAULT_GROUP, dtype_bytes: int = 2) -> float:
    """KV-cache bytes one token adds, summed over layers (one format, or one per layer).

    Scales and zero points are counted; the fixed residual window (one group per layer, see
    :meth:`QuantizedKVCache.nbytes` for what a cache really holds) is not a per-token cost.
    """
    layers = [formats] if isinstance(formats, KVFormat) else list(formats)
    return sum(num_kv_heads * (key_bytes_per_token(f.key_bits, head_dim, group, dtype_bytes)
                               + value_bytes_per_token(f.value_bits, head_dim, dtype_bytes)) for f in layers)


# ---------------------------------------------------------------------------------- packing
def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes ``[..., D]`` (each < 2^bits) -> uint8 ``[..., D * bits / 8]``."""
    per = 8 // bits
    if codes.shape[-1] % per:
        raise ValueError(f"the last dim ({codes.shape[-1]}) must be a multiple of {per} for {bits}-bit codes")
    grouped = codes.to(torch.int32).reshape(*codes.shape[:-1], codes.shape[-1] // per, per)
    out = torch.zeros(grouped.shape[:-1], dtype=torch.int32, device=codes.device)
    for r, slot in enumerate(SLOT_ORDER[per]):
        out |= grouped[..., r] << (slot * bits)
    return out.to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`."""
    per = 8 // bits
    mask = (1 << bits) - 1
    wide = packed.to(torch.int32)
    parts = [(wide >> (slot * bits)) & mask for slot in SLOT_ORDER[per]]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per).to(torch.uint8)


# ------------------------------------------------------------------------------ quantising
@dataclass
class QuantizedTensor:
    """Packed codes with their fp16 scales and zero points (``x ~ code * scale + zero``)."""

    packed: torch.Tensor  # uint8 [..., T, D * bits / 8]
    scale: torch.Tensor  # fp16: keys [..., T / group, D]; values [..., T]
    zero: torch.Tensor  # fp16, same shape as scale
    bits: int


def _affine(x: torch.Tensor, bits: int, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, fp16 scale, fp16 zero of ``x`` with min/max taken over ``dims``.

    The fp16-rounded scale and zero are the ones the codes are computed with, so dequantising
    reproduces what was stored; ties round up (``floor(y + 0.5)``) as the Triton kernel does.
    """
    top = (1 << bits) - 1
    xf = x.to(torch.float32)
    lo = xf.amin(dim=dims, keepdim=True)
    hi = xf.amax(dim=dims, keepdim=True)
    zero = lo.to(torch.float16)
    scale = ((hi - lo) / top).to(torch.float16)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale).to(torch.float32)
    codes = torch.floor((xf - zero.to(torch.float32)) / safe + 0.5).clamp_(0, top).to(torch.uint8)
    return codes, scale, zero


def quantize_keys(keys: torch.Tensor, bits: int, group: int = DEFAULT_GROUP) -> QuantizedTensor:
    """Keys ``[..., T, D]`` (T a multiple of ``group``) per channel over groups of tokens."""
    *lead, t, d = keys.shape
    if t % group:
        raise ValueError(f"{t} tokens are not whole groups of {group}")
    grouped = keys.reshape(*lead, t // group, group, d)
    codes, scale, zero = _affine(grouped, bits, dims=(-2,))
    return QuantizedTensor(pack_codes(codes.reshape(*lead, t, d), bits), scale.squeeze(-2), zero.squeeze(-2), bits)


def quantize_values(values: torch.Tensor, bits: int) -> QuantizedTensor:
    """Values ``[..., T, D]`` per token over the whole head."""
    codes, scale, zero = _affine(values, bits, dims=(-1,))
    return QuantizedTensor(pack_codes(codes, bits), scale.squeeze(-1), zero.squeeze(-1), bits)


def dequantize_keys(q: QuantizedTensor, group: int = DEFAULT_GROUP, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    codes = unpack_codes(q.packed, q.bits).to(torch.float32)
    *lead, t, d = codes.shape
    grouped = codes.reshape(*lead, t // group, group, d)
    out = grouped * q.scale.to(torch.float32)[..., None, :] + q.zero.to(torch.float32)[..., None, :]
    return out.reshape(*lead, t, d).to(dtype)


def dequantize_values(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    codes = unpack_codes(q.packed, q.bits).to(torch.float32)
    return (codes * q.scale.to(torch.float32)[..., None] + q.zero.to(torch.float32)[..., None]).to(dtype)


# ------------------------------------------------------------------------------ the cache
def _triton_ready(device: torch.device) -> bool:
    from paretoml.objectives.deploy import kv_attention_triton

    return device.type == "cuda" and kv_attention_triton.available()


def attention_backend(device: torch.device | str) -> str:
    """:data:`TRITON_BACKEND` where the decode kernel reads the packed cache, else dequant+SDPA."""
    return TRITON_BACKEND if _triton_ready(torch.device(device)) else DEQUANT_SDPA_BACKEND


class QuantizedKVLayer(CacheLayerMixin):
    """One decoder layer's cache in one :class:`KVFormat`, in fixed-capacity buffers.

    Buffers grow (doubling) when a prefill outruns them; :meth:`reserve` allocates them ahead
    so that a captured CUDA graph keeps writing into the same memory. ``length`` is a device
    tensor (what a graph replay advances); ``_length`` the host copy transformers' bookkeeping
    reads, which a graph replay does not advance.

    Args:
        fmt: this layer's key and value bits.
        group: tokens per key group and size of the full-precision residual window.
    """

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, fmt: KVFormat, group: int = DEFAULT_GROUP):
        super().__init__()
        if group <= 0 or group & (group - 1):
            raise ValueError(f"group must be a power of two, got {group}")
        self.fmt = fmt
        self.group = group
        self.capacity = 0
        self._length = 0
        self.length: torch.Tensor | None = None

    # -- allocation -------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.dtype = key_states.device, key_states.dtype
        self.batch_size, self.num_heads, _, self.head_dim = key_states.shape
        self.length = torch.zeros((), dtype=torch.int32, device=self.device)
        self.is_initialized = True
        self._allocate(0)

    def reserve(self, tokens: int) -> None:
        """Hold room for ``tokens`` in all (rounded up to whole groups)."""
        if tokens > self.capacity:
            self._allocate(tokens)

    def _allocate(self, tokens: int) -> None:
        g = self.group
        cap = max(g, math.ceil(tokens / g) * g)
        b, h, d, dev = self.batch_size, self.num_heads, self.head_dim, self.device
        old = self.__dict__.copy() if self.capacity else None
        kb, vb = self.fmt.key_bits, self.fmt.value_bits
        if kb == 16:
            self.k_data = torch.zeros(b, h, cap, d, dtype=self.dtype, device=dev)
        else:
            self.k_data = torch.zeros(b, h, cap, d * kb // 8, dtype=torch.uint8, device=dev)
            self.k_scale = torch.zeros(b, h, cap // g, d, dtype=torch.float16, device=dev)
            self.k_zero = torch.zeros(b, h, cap // g, d, dtype=torch.float16, device=dev)
        if vb == 16:
            self.v_data = torch.zeros(b, h, cap, d, dtype=self.dtype, device=dev)
        else:
            self.v_data = torch.zeros(b, h, cap, d * vb // 8, dtype=torch.uint8, device=dev)
            self.v_scale = torch.zeros(b, h, cap, dtype=torch.float16, device=dev)
            self.v_zero = torch.zeros(b, h, cap, dtype=torch.float16, device=dev)
        if self.fmt.quantized and old is None:
            self.k_res = torch.zeros(b, h, g, d, dtype=self.dtype, device=dev)
            self.v_res = torch.zeros(b, h, g, d, dtype=self.dtype, device=dev)
        if old is not None:  # copy what was stored into the larger buffers
            n = old["capacity"]
            for name in ("k_data", "v_data", "v_scale", "v_zero"):
                if name in old:
                    getattr(self, name)[:, :, :n] = old[name]
            for name in ("k_scale", "k_zero"):
                if name in old:
                    getattr(self, name)[:, :, : n // g] = old[name]
        self.capacity = cap

    def nbytes(self) -> int:
        """Bytes this layer holds on its device (buffers at capacity, residual included)."""
        names = ("k_data", "k_scale", "k_zero", "v_data", "v_scale", "v_zero", "k_res", "v_res")
        return sum(getattr(self, n).numel() * getattr(self, n).element_size() for n in names if hasattr(self, n))

    # -- writing ----------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Store the new tokens; return this layer twice (the attention function reads it)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        start = self._length
        if start + q > self.capacity:
            self._allocate(max(start + q, 2 * self.capacity))
        if q == 1 and _triton_ready(self.device):
            from paretoml.objectives.deploy import kv_attention_triton

            kv_attention_triton.append_token(self, key_states, value_states)
        else:
            self._append_torch(key_states, value_states, start)
        self.length.add_(q)
        self._length = start + q
        return self, self

    def _append_torch(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        g, fmt, q = self.group, self.fmt, keys.shape[-2]
        if not fmt.quantized:
            self.k_data[:, :, start:start + q] = keys
            self.v_data[:, :, start:start + q] = values
            return
        r = start % g  # tokens already in the residual
        first = start - r  # first token of the residual's group
        k_all = torch.cat([self.k_res[:, :, :r], keys.to(self.dtype)], dim=-2)
        v_all = torch.cat([self.v_res[:, :, :r], values.to(self.dtype)], dim=-2)
        full = (k_all.shape[-2] // g) * g
        if full:
            self._store_groups(k_all[:, :, :full], v_all[:, :, :full], first)
        rest = k_all.shape[-2] - full
        self.k_res[:, :, :rest] = k_all[:, :, full:]
        self.v_res[:, :, :rest] = v_all[:, :, full:]

    def _store_groups(self, keys: torch.Tensor, values: torch.Tensor, first: int) -> None:
        """Quantise whole groups of tokens starting at token ``first`` (a group boundary)."""
        g, fmt, t = self.group, self.fmt, keys.shape[-2]
        if fmt.key_bits == 16:
            self.k_data[:, :, first:first + t] = keys
        else:
            qk = quantize_keys(keys, fmt.key_bits, g)
            self.k_data[:, :, first:first + t] = qk.packed
            self.k_scale[:, :, first // g:(first + t) // g] = qk.scale
            self.k_zero[:, :, first // g:(first + t) // g] = qk.zero
        if fmt.value_bits == 16:
            self.v_data[:, :, first:first + t] = values
        else:
            qv = quantize_values(values, fmt.value_bits)
            self.v_data[:, :, first:first + t] = qv.packed
            self.v_scale[:, :, first:first + t] = qv.scale
            self.v_zero[:, :, first:first + t] = qv.zero

    # -- reading ----------------------------------------------------------------------------
    def dequantized(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, H, length, D]`` as the cache holds them (the reference)."""
        dtype = dtype or self.dtype
        n, g, fmt = self._length, self.group, self.fmt
        if not fmt.quantized:
            return self.k_data[:, :, :n].to(dtype), self.v_data[:, :, :n].to(dtype)
        full = (n // g) * g
        if fmt.key_bits == 16:
            k = self.k_data[:, :, :full].to(dtype)
        else:
            k = dequantize_keys(QuantizedTensor(self.k_data[:, :, :full], self.k_scale[:, :, :full // g],
                                                self.k_zero[:, :, :full // g], fmt.key_bits), g, dtype)
        if fmt.value_bits == 16:
            v = self.v_data[:, :, :full].to(dtype)
        else:
            v = dequantize_values(QuantizedTensor(self.v_data[:, :, :full], self.v_scale[:, :, :full],
                                                  self.v_zero[:, :, :full], fmt.value_bits), dtype)
        k = torch.cat([k, self.k_res[:, :, :n - full].to(dtype)], dim=-2)
        v = torch.cat([v, self.v_res[:, :, :n - full].to(dtype)], dim=-2)
        return k, v

    # -- transformers' bookkeeping ----------------------------------------------------------
    def get_seq_length(self) -> int:
        return self._length

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self._length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self._length = 0
        if self.length is not None:
            self.length.zero_()

    def set_length(self, tokens: int) -> None:
        """Say the cache holds ``tokens`` (a benchmark fills the buffers itself)."""
        if tokens > self.capacity:
            raise ValueError(f"{tokens} tokens do not fit a capacity of {self.capacity}")
        self._length = tokens
        self.length.fill_(tokens)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("beam search is not supported by the quantised KV cache")


class QuantizedKVCache(Cache):
    """A transformers cache holding each decoder layer's keys and values in its own format.

    Args:
        formats: one :class:`KVFormat` per decoder layer.
        group: tokens per key group and residual window (a power of two, >= 16 on CUDA).
    """

    def __init__(self, formats: Sequence[KVFormat], group: int = DEFAULT_GROUP):
        self.formats = tuple(formats)
        super().__init__(layers=[QuantizedKVLayer(f, group) for f in self.formats])

    @property
    def is_compileable(self) -> bool:  # our decode step is graph-captured, not torch.compiled
        return False

    def reserve(self, batch: int, tokens: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype, device: torch.device | str) -> None:
        """Allocate every layer for ``batch`` x ``tokens`` ahead (before a CUDA graph capture)."""
        blank = torch.zeros(batch, num_kv_heads, 0, head_dim, dtype=dtype, device=device)
        for layer in self.layers:
            if not layer.is_initialized:
                layer.lazy_initialization(blank, blank)
            layer.reserve(tokens)

    def nbytes(self) -> int:
        """Device bytes all layers hold (packed codes, scales, residual windows)."""
        return sum(layer.nbytes() for layer in self.layers if layer.is_initialized)


# ------------------------------------------------------------------------------ attention
def _dequant_sdpa(layer: QuantizedKVLayer, query: torch.Tensor, attention_mask: torch.Tensor | None,
                  scaling: float | None) -> torch.Tensor:
    """Attention over the dequantised cache: the CPU path, prefill, and the kernel's reference."""
    keys, values = layer.dequantized(query.dtype)
    q_len, kv_len = query.shape[-2], keys.shape[-2]
    if attention_mask is not None:
        mask = attention_mask[..., :kv_len]
    elif q_len == 1:
        mask = None
    else:  # causal, aligned to the end of the cache
        pos = torch.arange(kv_len - q_len, kv_len, device=query.device)
        mask = torch.arange(kv_len, device=query.device)[None, :] <= pos[:, None]
    out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling,
                                         enable_gqa=query.shape[1] != keys.shape[1])
    return out.transpose(1, 2).contiguous()


def kv_attention_forward(module: torch.nn.Module, query: torch.Tensor, key, value,
                         attention_mask: torch.Tensor | None, scaling: float | None = None,
                         dropout: float = 0.0, **kwargs):
    """The attention function registered as :data:`KV_ATTENTION` (transformers' signature).

    ``key`` is the :class:`QuantizedKVLayer` the cache's ``update`` returned; any other key
    (a model run without our cache) goes to transformers' SDPA attention unchanged.
    """
    if not isinstance(key, QuantizedKVLayer):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if query.shape[-2] == 1 and attention_mask is None and _triton_ready(query.device):
        from paretoml.objectives.deploy import kv_attention_triton

        return kv_attention_triton.decode_attention(key, query, scaling), None
    return _dequant_sdpa(key, query, attention_mask, scaling), None


def kv_attention_mask(*args, q_length: int, attention_mask: torch.Tensor | None = None, **kwargs):
    """SDPA's mask, except none at all for a decode step without padding.

    The kernel reads exactly the tokens the cache holds, so one query token needs no mask;
    transformers would otherwise build one while a CUDA graph is captured (it cannot skip it
    then) and send the step down the dequantising path.
    """
    from transformers.masking_utils import sdpa_mask

    if q_length == 1 and attention_mask is None:
        return None
    return sdpa_mask(*args, q_length=q_length, attention_mask=attention_mask, **kwargs)


def register_kv_attention() -> str:
    """Register :data:`KV_ATTENTION` and its mask builder with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(KV_ATTENTION, kv_attention_forward)
    AttentionMaskInterface.register(KV_ATTENTION, kv_attention_mask)
    return KV_ATTENTION


def use_quantized_cache(model, formats: Sequence[KVFormat] | KVFormat,
                        group: int = DEFAULT_GROUP) -> QuantizedKVCache:
    """Switch ``model`` to :data:`KV_ATTENTION` and return a fresh cache for it.

    Pass the cache as ``past_key_values`` to ``model(...)`` or ``model.generate(...)``.
    """
    layers = model.config.num_hidden_layers
    per_layer = [formats] * layers if isinstance(formats, KVFormat) else list(formats)
    if len(per_layer) != layers:
        raise ValueError(f"{len(per_layer)} KV formats for {layers} decoder layers")
    register_kv_attention()
    model.set_attn_implementation(KV_ATTENTION)
    return QuantizedKVCache(per_layer, group)
