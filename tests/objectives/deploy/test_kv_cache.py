"""The quantised KV cache on CPU: round trips, packing, bytes, and a tiny random Llama using it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paretoml.objectives.deploy.kv_cache import (
    DEQUANT_SDPA_BACKEND,
    KVFormat,
    QuantizedKVCache,
    QuantizedKVLayer,
    attention_backend,
    bytes_per_token,
    dequantize_keys,
    dequantize_values,
    pack_codes,
    quantize_keys,
    quantize_values,
    unpack_codes,
    use_quantized_cache,
)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packing_is_exact_and_dense(bits):
    codes = torch.randint(0, 1 << bits, (3, 5, 64), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.shape == (3, 5, 64 * bits // 8)
    assert torch.equal(unpack_codes(packed, bits), codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_trip_error_is_within_half_a_step(bits):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    x[..., 7] += 10.0  # an outlier channel: per-channel key scales absorb it
    qk = quantize_keys(x, bits, group=32)
    k = dequantize_keys(qk, 32)
    step_k = qk.scale.float().repeat_interleave(32, dim=-2)
    assert ((k - x).abs() <= step_k / 2 + 1e-2 * step_k + 1e-3).all()
    qv = quantize_values(x, bits)
    v = dequantize_values(qv)
    step_v = qv.scale.float()[..., None]
    assert ((v - x).abs() <= step_v / 2 + 1e-2 * step_v + 1e-3).all()


def test_round_trip_error_falls_with_bits():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 64)
    errors = [(dequantize_keys(quantize_keys(x, b), 32) - x).abs().mean().item() for b in (2, 4, 8)]
    assert errors[0] > 2 * errors[1] > 4 * errors[2] > 0


def test_a_constant_group_round_trips_exactly():
    x = torch.full((1, 32, 64), 0.5)
    assert torch.equal(dequantize_keys(quantize_keys(x, 2), 32), x)
    assert torch.equal(dequantize_values(quantize_values(x, 2)), x)


def test_bytes_per_token_counts_codes_and_scales():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64; bf16 is 2 bytes x 64 x 2 (K, V) x 3 x 30
    assert bytes_per_token(KVFormat(16, 16), 3, 64) == 2 * 64 * 2 * 3
    k4 = 64 * 4 / 8 + 2 * 2 * 64 / 32  # codes + fp16 scale and zero per channel per 32 tokens
    v4 = 64 * 4 / 8 + 2 * 2  # codes + fp16 scale and zero per token
    assert bytes_per_token([KVFormat(4, 4)] * 30, 3, 64) == pytest.approx(30 * 3 * (k4 + v4))
    ratio = bytes_per_token(KVFormat(4, 4), 3, 64) / bytes_per_token(KVFormat(16, 16), 3, 64)
    assert ratio < 0.35


def test_format_validates_and_parses():
    assert KVFormat.parse("k8v4") == KVFormat(8, 4)
    assert KVFormat(8, 4).label == "K8V4"
    with pytest.raises(ValueError, match="key_bits"):
        KVFormat(3, 4)
    with pytest.raises(ValueError, match="K8V4"):
        KVFormat.parse("8/4")


def test_cpu_reads_the_cache_by_dequantising():
    assert attention_backend("cpu") == DEQUANT_SDPA_BACKEND


def test_layer_residual_holds_the_newest_tokens_exactly():
    torch.manual_seed(0)
    layer = QuantizedKVLayer(KVFormat(2, 2), group=32)
    k, v = torch.randn(1, 3, 70, 64), torch.randn(1, 3, 70, 64)
    layer.update(k[:, :, :50], v[:, :, :50])
    for t in range(50, 70):  # token by token, across a group boundary at 64
        layer.update(k[:, :, t:t + 1], v[:, :, t:t + 1])
    keys, values = layer.dequantized()
    assert keys.shape == (1, 3, 70, 64) and layer.get_seq_length() == 70
    assert torch.equal(keys[:, :, 64:], k[:, :, 64:]) and torch.equal(values[:, :, 64:], v[:, :, 64:])
    assert not torch.equal(keys[:, :, :64], k[:, :, :64])  # quantised groups
    # token-by-token appends store what one prefill of the same tokens stores
    whole = QuantizedKVLayer(KVFormat(2, 2), group=32)
    whole.update(k, v)
    assert all(torch.equal(a, b) for a, b in zip(whole.dequantized(), (keys, values)))


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def _logits(model, ids, formats, prompt):
    """Prefill ``prompt`` tokens, then decode the rest one by one through the cache."""
    cache = use_quantized_cache(model, formats, group=16)
    with torch.no_grad():
        outs = [model(ids[:, :prompt], past_key_values=cache).logits]
        outs += [model(ids[:, t:t + 1], past_key_values=cache).logits for t in range(prompt, ids.shape[1])]
    model.set_attn_implementation("sdpa")
    return torch.cat(outs, dim=1), cache


def test_tiny_llama_logits_follow_the_bits():
    model = _tiny_llama()
    ids = torch.randint(0, 256, (2, 60))
    with torch.no_grad():
        reference = model(ids).logits
    errors = {}
    for fmt in (KVFormat(16, 16), KVFormat(8, 8), KVFormat(4, 4), KVFormat(2, 2)):
        logits, cache = _logits(model, ids, fmt, prompt=40)
        errors[fmt.label] = (logits - reference).abs().max().item()
        assert cache.get_seq_length() == 60
    assert errors["K16V16"] < 1e-5  # unquantised: the same attention as transformers' own
    assert errors["K8V8"] < errors["K4V4"] < errors["K2V2"]
    assert errors["K8V8"] < 0.05 * reference.abs().max().item()


def test_per_layer_formats_and_memory():
    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 40))
    mixed = [KVFormat(8, 4), KVFormat(4, 2), KVFormat(16, 16)]
    _, cache = _logits(model, ids, mixed, prompt=33)
    assert [layer.fmt for layer in cache.layers] == mixed
    _, bf16 = _logits(model, ids, KVFormat(16, 16), prompt=33)
    assert cache.nbytes() < bf16.nbytes()
    with pytest.raises(ValueError, match="3 decoder layers"):
        use_quantized_cache(model, mixed[:2])


def test_generate_uses_the_quantized_cache():
    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=6, do_sample=False)
        cache = use_quantized_cache(model, KVFormat(16, 16), group=16)
        quant = model.generate(ids, max_new_tokens=6, do_sample=False, past_key_values=cache)
    assert isinstance(cache, QuantizedKVCache) and cache.get_seq_length() == 17
    assert torch.equal(plain, quant)


_INTERPRETER_CHECK = """
import copy
import numpy as np
import torch
import triton.runtime.interpreter as interpreter

original = interpreter._patch_lang_tensor


def patched(tensor, scope):  # numpy >= 2.4 refuses int() of a 1-element array
    original(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))


interpreter._patch_lang_tensor = patched
from paretoml.objectives.deploy import kv_attention_triton as kernel
from paretoml.objectives.deploy.kv_cache import KVFormat, QuantizedKVLayer, _dequant_sdpa

torch.manual_seed(0)
layer = QuantizedKVLayer(KVFormat(4, 2), group=32)
bf = torch.bfloat16
layer.update(torch.randn(1, 3, 60, 64, dtype=bf), torch.randn(1, 3, 60, 64, dtype=bf))
layer.reserve(128)
twin = copy.deepcopy(layer)
for _ in range(6):  # crosses the group boundary at 64
    kn, vn = torch.randn(1, 3, 1, 64, dtype=bf), torch.randn(1, 3, 1, 64, dtype=bf)
    layer.update(kn, vn)
    kernel.append_token(twin, kn, vn)
    twin.length.add_(1)
    twin._length += 1
assert all(torch.equal(a, b) for a, b in zip(layer.dequantized(), twin.dequantized()))
q = torch.randn(1, 9, 1, 64, dtype=bf)
out = kernel.decode_attention(layer, q, splits=2).float()
error = (out - _dequant_sdpa(layer, q.float(), None, None)).abs().max().item()
assert error < 1e-2, error
print("ok", error)
"""


def test_kernel_matches_the_torch_path_in_tritons_interpreter():
    """Where Triton is installed (not on a CPU-only CI), its interpreter runs the kernels.

    A fresh process: Triton chooses the interpreter when the kernels are defined.
    """
    pytest.importorskip("triton")
    import triton.runtime.interpreter as interpreter

    if not hasattr(interpreter, "_patch_lang_tensor"):
        pytest.skip("this Triton's interpreter is laid out differently")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
