"""Decode attention that reads :mod:`.kv_cache`'s packed keys and values directly, in Triton.

Two kernels per decoder layer and decode step, both CUDA-graph safe (they read the cache's
length from a device tensor and never leave the buffers the cache reserved):

- :func:`append_token` writes the new token's key and value into the layer's full-precision
  residual window and, when that completes a group, quantises the group (keys per channel,
  values per token) into the packed buffers, as the pure-torch path does.
- :func:`decode_attention` is split-K flash decoding: each program takes one (batch, KV head)
  and one slice of the cache, tile by tile (a tile is one key group, so its key scales are
  one row), for all the query heads of the group at once (grouped-query attention: each
  packed tile is read once for them). Codes are never converted int-to-float: each byte
  slot's bits are masked into an fp16 mantissa (:func:`code_tile`), one tensor-core product
  per slot, and the scales, zero points and the fp16 offset are folded into q (keys, per
  channel) and into p (values, per token). The residual window is one more split, and a
  second small kernel merges the splits by their log-sum-exp.

Triton is imported lazily: :func:`available` is False where it is missing, and the cache
then dequantises and calls SDPA.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from paretoml.objectives.deploy.kv_cache import QuantizedKVLayer

try:  # lazily, from kv_cache's point of view: this module is imported only on the kernel path
    import triton
    import triton.language as tl
except ImportError:  # a CPU-only install
    triton = None

#: tokens per tile of the attention loop over an unquantised cache (a quantised tile is one key group)
BLOCK_N = 64
#: warps per decode program (fewer warps: fewer cross-warp reductions of the [16, tile] scores)
NUM_WARPS = 2
#: warps where a side has 8-bit codes (at 2 warps ptxas spills their 64-channel slot tiles)
NUM_WARPS_8BIT = 4
#: programs to aim for per multiprocessor when choosing how many slices a sequence is cut in
PROGRAMS_PER_SM = 16
#: software-pipelining depth of the tile loop (loads of the next tiles in flight)
NUM_STAGES = 2
#: query rows of a tile: tl.dot needs at least 16
_MIN_ROWS = 16


def available() -> bool:
    """Whether Triton can be imported here (it cannot on a CPU-only install)."""
    return triton is not None


if triton is not None:  # the kernels exist only where Triton does
    @triton.jit
    def pack(codes, BITS: tl.constexpr, N: tl.constexpr, D: tl.constexpr):
        """int32 codes [N, D] -> uint8 [N, D * BITS / 8] in kv_cache.SLOT_ORDER (as pack_codes)."""
        if BITS == 8:
            return codes.to(tl.uint8)
        elif BITS == 4:
            a, b = tl.split(tl.reshape(codes, (N, D // 2, 2)))
            return (a | (b << 4)).to(tl.uint8)
        else:
            lo, hi = tl.split(tl.reshape(codes, (N, D // 4, 2, 2)))
            s0, s1 = tl.split(lo)
            s2, s3 = tl.split(hi)
            return (s0 | (s1 << 2) | (s2 << 4) | (s3 << 6)).to(tl.uint8)

    @triton.jit
    def slot_channel(i: tl.constexpr, P: tl.constexpr):
        """Channel residue (mod P) of byte slot ``i``: the inverse of kv_cache.SLOT_ORDER."""
        if P == 4:
            return (i & 1) * 2 + (i >> 1)
        else:
            return i

    @triton.jit
    def slots(x, P: tl.constexpr, DP: tl.constexpr):
        """Channels ``[D]`` -> the ``P`` byte slots' channels ``[D / P]`` each (kv_cache.SLOT_ORDER)."""
        if P == 1:
            return x, x, x, x
        elif P == 2:
            a, b = tl.split(tl.reshape(x, (DP, 2)))
            return a, b, a, b
        else:  # channel 4m + 2a + b; slot i holds residue slot_channel(i) = 0, 2, 1, 3
            even, odd = tl.split(tl.reshape(x, (DP, 2, 2)))
            r0, r2 = tl.split(even)
            r1, r3 = tl.split(odd)
            return r0, r2, r1, r3

    @triton.jit
    def code_tile(packed, SLOT: tl.constexpr, BITS: tl.constexpr):
        """fp16 ``1024 + code * 2**(BITS * SLOT)`` for byte slot ``SLOT`` of uint8 ``packed``.

        The code's bits are masked in place into the mantissa of an fp16 whose exponent reads
        1024 (0x6400): one AND-OR per code and no int-to-float conversion (a quarter-rate
        instruction, what made the previous kernel compute bound). The caller folds the
        offset and the power of two into the scales."""
        MASK: tl.constexpr = ((1 << BITS) - 1) << (BITS * SLOT)
        return ((packed.to(tl.int32) & MASK) | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)

    @triton.jit
    def store_part(OP, base, rows, rmask, acc, l_i, ch, D: tl.constexpr):
        """One split's normalised output rows (at channels ``ch``); its log-sum-exp once."""
        safe = tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(OP + (base + rows)[:, None] * D + ch[None, :], acc / safe, mask=rmask[:, None])

    @triton.jit
    def store_lse(LP, base, rows, rmask, m_i, l_i):
        """The split's log-sum-exp per row (log2 units), -inf where it saw no token."""
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))
        tl.store(LP + base + rows, lse, mask=rmask)

    @triton.jit
    def residual_part(KR, VR, OP, LP, qrow, rmask, rows, base, bh, length, qk_scale,
                      D: tl.constexpr, GROUP: tl.constexpr):
        """The newest, unquantised tokens (fewer than a group): a split of their own."""
        cols = tl.arange(0, D)
        stored = (length // GROUP) * GROUP
        q16 = (tl.load(qrow + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale).to(tl.float16)
        r = tl.arange(0, GROUP)
        rm = r < length - stored
        rptr = (bh * GROUP + r)[:, None] * D + cols[None, :]
        k = tl.load(KR + rptr, mask=rm[:, None], other=0.0).to(tl.float16)
        scores = tl.where(rm[None, :], tl.dot(q16, tl.trans(k)), float("-inf"))
        m_i = tl.max(scores, axis=1)
        m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
        p = tl.exp2(scores - m_safe[:, None])
        l_i = tl.sum(p, axis=1)
        v = tl.load(VR + rptr, mask=rm[:, None], other=0.0).to(tl.float16)
        acc = tl.dot(p.to(tl.float16), v)
        store_part(OP, base, rows, rmask, acc, l_i, cols, D)
        store_lse(LP, base, rows, rmask, m_i, l_i)

    @triton.jit
    def cache_part(K, KS, KZ, V, VS, VZ, OP, LP, qrow, rmask, rows, base, bh, start, end, qk_scale, CAP,
                   ROWS: tl.constexpr, D: tl.constexpr, KBITS: tl.constexpr, VBITS: tl.constexpr,
                   PK: tl.constexpr, PV: tl.constexpr, GROUP: tl.constexpr, BLOCK: tl.constexpr,
                   NUM_STAGES: tl.constexpr):
        """Tokens ``[start, end)`` of the stored (packed or bf16) cache, one tile at a time.

        Keys: scores = sum over byte slots of (q * s / 2^(bits*slot)) . X + q . z - 1024 * sum(q*s/..),
        with X the fp16 ``1024 + code * 2^(bits*slot)`` of :func:`code_tile`; the scaled q
        is rounded to fp16 once and the same rounded value enters the offset term, so the
        1024s cancel exactly. Values: acc = (p * s) . X per slot; the output is
        (acc - 1024 * sum(p*s)) / 2^(bits*slot) + sum(p * z), all three rescaled online."""
        DK: tl.constexpr = D // PK
        DV: tl.constexpr = D // PV
        cols = tl.arange(0, D)
        jk = tl.arange(0, DK)
        jv = tl.arange(0, DV)
        q16 = (tl.load(qrow + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale).to(tl.float16)
        # the query's channels of each key byte slot, loaded once (loop invariant)
        q0 = tl.load(qrow + (jk * PK + slot_channel(0, PK))[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale
        q1 = q0
        q2 = q0
        q3 = q0
        if PK >= 2:
            q1 = tl.load(qrow + (jk * PK + slot_channel(1, PK))[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale
        if PK == 4:
            q2 = tl.load(qrow + (jk * PK + slot_channel(2, PK))[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale
            q3 = tl.load(qrow + (jk * PK + slot_channel(3, PK))[None, :], mask=rmask[:, None], other=0.0).to(tl.float32) * qk_scale
        m_i = tl.full([ROWS], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS], tl.float32)
        s_p = tl.zeros([ROWS], tl.float32)  # sum of the fp16 p*s that entered the value products
        z_p = tl.zeros([ROWS], tl.float32)  # sum of p * zero
        acc0 = tl.zeros([ROWS, DV], tl.float32)
        acc1 = tl.zeros([ROWS, DV], tl.float32)
        acc2 = tl.zeros([ROWS, DV], tl.float32)
        acc3 = tl.zeros([ROWS, DV], tl.float32)
        # a quantised cache's splits hold whole groups, so its tiles are never partial: no masks
        MASKED: tl.constexpr = KBITS == 16 and VBITS == 16
        offs = start + tl.arange(0, BLOCK)
        kp = K + (bh * CAP + offs)[:, None] * (D if KBITS == 16 else DK) + (cols if KBITS == 16 else jk)[None, :]
        vp = V + (bh * CAP + offs)[:, None] * (D if VBITS == 16 else DV) + (cols if VBITS == 16 else jv)[None, :]
        vsp = VS + bh * CAP + offs
        vzp = VZ + bh * CAP + offs
        sbase = (bh * (CAP // GROUP) + start // GROUP) * D
        for n0 in tl.range(start, end, BLOCK, num_stages=NUM_STAGES):
            if MASKED:
                nmask = (n0 + tl.arange(0, BLOCK)) < end
            # ---- scores
            if KBITS == 16:
                if MASKED:
                    k = tl.load(kp, mask=nmask[:, None], other=0.0)
                else:
                    k = tl.load(kp)
                scores = tl.dot(q16, tl.trans(k.to(tl.float16)))
            else:
                pk = tl.load(kp)
                scores = tl.zeros([ROWS, BLOCK], tl.float32)
                corr = tl.zeros([ROWS], tl.float32)
                # the group's scales and zeros: one contiguous load each, split into byte slots
                s0, s1, s2, s3 = slots(tl.load(KS + sbase + cols).to(tl.float32), PK, DK)
                z0, z1, z2, z3 = slots(tl.load(KZ + sbase + cols).to(tl.float32), PK, DK)
                for i in tl.static_range(PK):
                    if i == 0:
                        q_i, s_i, z_i = q0, s0, z0
                    elif i == 1:
                        q_i, s_i, z_i = q1, s1, z1
                    elif i == 2:
                        q_i, s_i, z_i = q2, s2, z2
                    else:
                        q_i, s_i, z_i = q3, s3, z3
                    s_i = s_i * (1.0 / (1 << (KBITS * i)))
                    qs = (q_i * s_i[None, :]).to(tl.float16)
                    scores = tl.dot(qs, tl.trans(code_tile(pk, i, KBITS)), scores)
                    corr += tl.sum(q_i * z_i[None, :] - 1024.0 * qs.to(tl.float32), axis=1)
                scores += corr[:, None]
            if MASKED:
                scores = tl.where(nmask[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no token yet
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(scores - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            m_i = m_new
            # ---- values
            if VBITS == 16:
                if MASKED:
                    v = tl.load(vp, mask=nmask[:, None], other=0.0)
                else:
                    v = tl.load(vp)
                acc0 = tl.dot(p.to(tl.float16), v.to(tl.float16), acc0 * alpha[:, None])
            else:
                pv = tl.load(vp)
                vs = tl.load(vsp).to(tl.float32)
                vz = tl.load(vzp).to(tl.float32)
                ps = (p * vs[None, :]).to(tl.float16)
                s_p = s_p * alpha + tl.sum(ps.to(tl.float32), axis=1)
                z_p = z_p * alpha + tl.sum(p * vz[None, :], axis=1)
                acc0 = tl.dot(ps, code_tile(pv, 0, VBITS), acc0 * alpha[:, None])
                if PV >= 2:
                    acc1 = tl.dot(ps, code_tile(pv, 1, VBITS), acc1 * alpha[:, None])
                if PV == 4:
                    acc2 = tl.dot(ps, code_tile(pv, 2, VBITS), acc2 * alpha[:, None])
                    acc3 = tl.dot(ps, code_tile(pv, 3, VBITS), acc3 * alpha[:, None])
            kp += BLOCK * (D if KBITS == 16 else DK)
            vp += BLOCK * (D if VBITS == 16 else DV)
            vsp += BLOCK
            vzp += BLOCK
            sbase += D
        if VBITS == 16:
            store_part(OP, base, rows, rmask, acc0, l_i, cols, D)
        else:
            off = (1024.0 * s_p)[:, None]
            zp = z_p[:, None]
            store_part(OP, base, rows, rmask, acc0 - off + zp, l_i, jv * PV + slot_channel(0, PV), D)
            if PV >= 2:
                store_part(OP, base, rows, rmask, (acc1 - off) * (1.0 / (1 << VBITS)) + zp, l_i,
                           jv * PV + slot_channel(1, PV), D)
            if PV == 4:
                store_part(OP, base, rows, rmask, (acc2 - off) * (1.0 / (1 << (2 * VBITS))) + zp, l_i,
                           jv * PV + slot_channel(2, PV), D)
                store_part(OP, base, rows, rmask, (acc3 - off) * (1.0 / (1 << (3 * VBITS))) + zp, l_i,
                           jv * PV + slot_channel(3, PV), D)
        store_lse(LP, base, rows, rmask, m_i, l_i)

    @triton.jit
    def decode_kernel(Q, K, KS, KZ, V, VS, VZ, KR, VR, LEN, OP, LP,
                      stride_qb, stride_qh, qk_scale, CAP,
                      H: tl.constexpr, N_REP: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr,
                      KBITS: tl.constexpr, VBITS: tl.constexpr, PK: tl.constexpr, PV: tl.constexpr,
                      GROUP: tl.constexpr, QUANT: tl.constexpr,
                      BLOCK: tl.constexpr, SPLIT_LEN, NUM_SPLITS: tl.constexpr, NUM_STAGES: tl.constexpr):
        """Split-K decode attention, one program per (batch, KV head) and slice of the cache;
        all ``N_REP`` query heads of the KV head share each tile (grouped-query attention).
        A quantised cache's residual window is the last split, a program of its own."""
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        length = tl.load(LEN)
        rows = tl.arange(0, ROWS)
        rmask = rows < N_REP
        qrow = Q + b * stride_qb + (h * N_REP + rows)[:, None] * stride_qh
        base = (bh * NUM_SPLITS + split) * N_REP
        start = split * SPLIT_LEN
        if QUANT:
            if split == NUM_SPLITS - 1:
                residual_part(KR, VR, OP, LP, qrow, rmask, rows, base, bh, length, qk_scale, D, GROUP)
            else:
                end = tl.minimum(start + SPLIT_LEN, (length // GROUP) * GROUP)
                cache_part(K, KS, KZ, V, VS, VZ, OP, LP, qrow, rmask, rows, base, bh, start, end, qk_scale,
                           CAP, ROWS, D, KBITS, VBITS, PK, PV, GROUP, BLOCK, NUM_STAGES)
        else:
            end = tl.minimum(start + SPLIT_LEN, length)
            cache_part(K, KS, KZ, V, VS, VZ, OP, LP, qrow, rmask, rows, base, bh, start, end, qk_scale,
                       CAP, ROWS, D, KBITS, VBITS, PK, PV, GROUP, BLOCK, NUM_STAGES)

    @triton.jit
    def merge_kernel(OP, LP, O, H: tl.constexpr, N_REP: tl.constexpr, RP: tl.constexpr, D: tl.constexpr,
                     NUM_SPLITS: tl.constexpr, SP: tl.constexpr):
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        s = tl.arange(0, SP)
        r = tl.arange(0, RP)
        cols = tl.arange(0, D)
        valid = (s[:, None] < NUM_SPLITS) & (r[None, :] < N_REP)
        lse = tl.load(LP + (bh * NUM_SPLITS + s[:, None]) * N_REP + r[None, :], mask=valid, other=float("-inf"))
        m = tl.max(lse, axis=0)
        w = tl.where(valid, tl.exp2(lse - m[None, :]), 0.0)
        w = w / tl.sum(w, axis=0)[None, :]
        ptr = ((bh * NUM_SPLITS + s[:, None, None]) * N_REP + r[None, :, None]) * D + cols[None, None, :]
        parts = tl.load(OP + ptr, mask=valid[:, :, None], other=0.0)
        out = tl.sum(w[:, :, None] * parts, axis=0)
        optr = ((b * H + h) * N_REP + r)[:, None] * D + cols[None, :]
        tl.store(O + optr, out.to(O.dtype.element_ty), mask=(r < N_REP)[:, None])

    @triton.jit
    def quantize_block(x, BITS: tl.constexpr, AXIS: tl.constexpr):
        """Codes, fp16-rounded scale and zero of ``x`` with min/max over ``AXIS``."""
        TOP: tl.constexpr = (1 << BITS) - 1
        lo = tl.min(x, axis=AXIS)
        hi = tl.max(x, axis=AXIS)
        zero = lo.to(tl.float16).to(tl.float32)
        scale = tl.math.div_rn(hi - lo, TOP * 1.0).to(tl.float16).to(tl.float32)
        safe = tl.where(scale == 0, 1.0, scale)
        if AXIS == 0:
            y = tl.math.div_rn(x - zero[None, :], safe[None, :])
        else:
            y = tl.math.div_rn(x - zero[:, None], safe[:, None])
        codes = tl.minimum(tl.maximum(tl.floor(y + 0.5), 0.0), TOP * 1.0).to(tl.int32)
        return codes, scale, zero

    @triton.jit
    def append_kernel(KN, VN, K, KS, KZ, V, VS, VZ, KR, VR, LEN,
                      skb, skh, svb, svh, CAP,
                      H: tl.constexpr, D: tl.constexpr, KBITS: tl.constexpr, VBITS: tl.constexpr,
                      GROUP: tl.constexpr, QUANT: tl.constexpr):
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        cols = tl.arange(0, D)
        pos = tl.load(LEN)
        kn = tl.load(KN + b * skb + h * skh + cols)
        vn = tl.load(VN + b * svb + h * svh + cols)
        if not QUANT:
            tl.store(K + (bh * CAP + pos) * D + cols, kn)
            tl.store(V + (bh * CAP + pos) * D + cols, vn)
        else:
            slot = pos % GROUP
            tl.store(KR + (bh * GROUP + slot) * D + cols, kn)
            tl.store(VR + (bh * GROUP + slot) * D + cols, vn)
            if slot == GROUP - 1:  # the group is complete: quantise it into the packed buffers
                first = pos - slot
                r = tl.arange(0, GROUP)
                ptr = (bh * GROUP + r)[:, None] * D + cols[None, :]
                is_new = (r == slot)[:, None]
                kb = tl.where(is_new, kn[None, :], tl.load(KR + ptr)).to(tl.float32)
                vb = tl.where(is_new, vn[None, :], tl.load(VR + ptr)).to(tl.float32)
                tok = bh * CAP + first + r
                if KBITS == 16:
                    tl.store(K + tok[:, None] * D + cols[None, :], kb.to(K.dtype.element_ty))
                else:
                    codes, scale, zero = quantize_block(kb, KBITS, 0)
                    PB: tl.constexpr = D * KBITS // 8
                    tl.store(K + tok[:, None] * PB + tl.arange(0, PB)[None, :], pack(codes, KBITS, GROUP, D))
                    srow = (bh * (CAP // GROUP) + first // GROUP) * D + cols
                    tl.store(KS + srow, scale.to(tl.float16))
                    tl.store(KZ + srow, zero.to(tl.float16))
                if VBITS == 16:
                    tl.store(V + tok[:, None] * D + cols[None, :], vb.to(V.dtype.element_ty))
                else:
                    codes, scale, zero = quantize_block(vb, VBITS, 1)
                    PBV: tl.constexpr = D * VBITS // 8
                    tl.store(V + tok[:, None] * PBV + tl.arange(0, PBV)[None, :], pack(codes, VBITS, GROUP, D))
                    tl.store(VS + tok, scale.to(tl.float16))
                    tl.store(VZ + tok, zero.to(tl.float16))



def _kernels():
    if triton is None:
        raise RuntimeError("Triton is not installed: the quantised KV cache runs dequant+SDPA")
    return decode_kernel, merge_kernel, append_kernel


def _buffers(layer: QuantizedKVLayer) -> tuple[torch.Tensor, ...]:
    """The layer's tensors in kernel order; a format without a tensor passes its data again."""
    k, v = layer.k_data, layer.v_data
    ks, kz = (layer.k_scale, layer.k_zero) if layer.fmt.key_bits < 16 else (k, k)
    vs, vz = (layer.v_scale, layer.v_zero) if layer.fmt.value_bits < 16 else (v, v)
    kr, vr = (layer.k_res, layer.v_res) if layer.fmt.quantized else (k, v)
    return k, ks, kz, v, vs, vz, kr, vr


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_splits(batch_heads: int, capacity: int, device: torch.device, block: int = BLOCK_N) -> int:
    """Sequence slices per (batch, KV head): enough programs to fill the GPU, whole tiles each."""
    sms = _multiprocessors(device.index or 0) if device.type == "cuda" else 4
    tiles = max(1, math.ceil(capacity / block))
    return max(1, min(tiles, math.ceil(PROGRAMS_PER_SM * sms / batch_heads)))


def append_token(layer: QuantizedKVLayer, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Write one new token ``[B, H, 1, D]`` at position ``layer.length`` (not advanced here)."""
    _, _, append = _kernels()
    b, h, _, d = keys.shape
    k, ks, kz, v, vs, vz, kr, vr = _buffers(layer)
    keys, values = keys.to(layer.dtype), values.to(layer.dtype)
    append[(b * h,)](keys, values, k, ks, kz, v, vs, vz, kr, vr, layer.length,
                     keys.stride(0), keys.stride(1), values.stride(0), values.stride(1), layer.capacity,
                     H=h, D=d, KBITS=layer.fmt.key_bits, VBITS=layer.fmt.value_bits,
                     GROUP=layer.group, QUANT=layer.fmt.quantized, num_warps=4)


def decode_attention(layer: QuantizedKVLayer, query: torch.Tensor, scaling: float | None = None,
                     splits: int | None = None, block: int = BLOCK_N) -> torch.Tensor:
    """Attention of one query token ``[B, Hq, 1, D]`` over the layer; returns ``[B, 1, Hq, D]``.

    ``splits`` slices the stored cache (default: enough programs to fill the GPU); a
    quantised cache adds one split for its residual window.
    """
    decode, merge, _ = _kernels()
    b, hq, _, d = query.shape
    h = layer.num_heads
    n_rep = hq // h
    quant = layer.fmt.quantized
    tile = layer.group if quant else block  # a quantised tile is one key group (its scales)
    scale = (scaling if scaling is not None else d ** -0.5) * 1.4426950408889634
    n_main = splits or num_splits(b * h, layer.capacity, query.device, tile)
    split_len = math.ceil(math.ceil(layer.capacity / n_main) / tile) * tile
    n_splits = math.ceil(layer.capacity / split_len) + (1 if quant else 0)
    part_o = torch.empty(b * h * n_splits * n_rep, d, dtype=torch.float32, device=query.device)
    part_l = torch.empty(b * h * n_splits * n_rep, dtype=torch.float32, device=query.device)
    out = torch.empty(b, 1, hq, d, dtype=query.dtype, device=query.device)
    k, ks, kz, v, vs, vz, kr, vr = _buffers(layer)
    kb, vb = layer.fmt.key_bits, layer.fmt.value_bits
    decode[(b * h, n_splits)](query, k, ks, kz, v, vs, vz, kr, vr, layer.length, part_o, part_l,
                              query.stride(0), query.stride(1), scale, layer.capacity,
                              H=h, N_REP=n_rep, ROWS=max(_MIN_ROWS, _next_pow2(n_rep)), D=d,
                              KBITS=kb, VBITS=vb, PK=8 // kb if kb < 16 else 1, PV=8 // vb if vb < 16 else 1,
                              GROUP=layer.group, QUANT=quant, BLOCK=tile, SPLIT_LEN=split_len,
                              NUM_SPLITS=n_splits, NUM_STAGES=NUM_STAGES,
                              num_warps=NUM_WARPS_8BIT if 8 in (kb, vb) else NUM_WARPS)
    merge[(b * h,)](part_o, part_l, out, H=h, N_REP=n_rep, RP=_next_pow2(n_rep), D=d,
                    NUM_SPLITS=n_splits, SP=_next_pow2(n_splits), num_warps=4)
    return out
