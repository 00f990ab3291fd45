"""The quantised KV cache's Triton decode attention on a GPU: correctness, then decode-step time.

Random weights of SmolLM2-135M's shapes (30 layers, hidden 576, 9 query / 3 KV heads,
head_dim 64, vocab 49152), bf16, one decode step captured in a CUDA graph, for each KV
format and batch x context. The cache is filled with random codes (a prefill of 128 x 8192
tokens would only cost time; the step reads the same bytes), then ``ctx`` tokens are said
to be in it.

Baselines: ``bf16-sdpa`` is the unquantised cache read by PyTorch's SDPA over exactly the
tokens held (what transformers' own path does); ``bf16-triton`` the same cache through our
kernel. Speed-ups are against the faster of the two.

Imports only torch, triton, transformers and the two module files (copied into a temporary
package root), so it runs on a device without the rest of ParetoML's dependencies::

    python benchmarks/kv_attention.py --group 128 --sweep --out benchmarks/results/kv-attention-h200
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(1, 512), (16, 2048), (64, 4096), (128, 8192)]
GROUP = 32


def import_kv_modules():
    """``paretoml.objectives.deploy.kv_cache`` from a package root holding only our two files."""
    root = Path(tempfile.mkdtemp(prefix="kvroot"))
    deploy = root / "paretoml" / "objectives" / "deploy"
    deploy.mkdir(parents=True)
    for pkg in (root / "paretoml", root / "paretoml" / "objectives", deploy):
        (pkg / "__init__.py").write_text("")
    for name in ("kv_cache.py", "kv_attention_triton.py"):
        shutil.copy(REPO / "objectives" / "deploy" / name, deploy / name)
    sys.path.insert(0, str(root))
    from paretoml.objectives.deploy import kv_attention_triton, kv_cache

    return kv_cache, kv_attention_triton


kvc, kvt = import_kv_modules()
KVFormat = kvc.KVFormat


def modes(layers: int) -> dict[str, list]:
    uni = {"bf16-sdpa": KVFormat(16, 16), "bf16-triton": KVFormat(16, 16), "KV8": KVFormat(8, 8),
           "KV4": KVFormat(4, 4), "KV2": KVFormat(2, 2), "K8V4": KVFormat(8, 4), "K4V2": KVFormat(4, 2)}
    out = {name: [f] * layers for name, f in uni.items()}
    # a mixed per-layer assignment in KVTuner's spirit: keys kept wider than values, the
    # first and last layers wider than the middle
    edge = max(1, layers // 10)
    out["mixed"] = [KVFormat(8, 4) if i < edge or i >= layers - edge else KVFormat(4, 2) for i in range(layers)]
    return out


def smollm2_config(max_pos: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=max_pos,
                       rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)


class ForceDequantSDPA:
    """Within the block the cache is read by dequantise + SDPA even on CUDA (the reference)."""

    def __enter__(self):
        self.saved = kvc._triton_ready
        kvc._triton_ready = lambda device: False

    def __exit__(self, *exc):
        kvc._triton_ready = self.saved


# ------------------------------------------------------------------------------ correctness
def layer_check(fmt, batch=4, prefill=1000, steps=40, seed=0) -> dict:
    """Triton append vs the torch append; Triton attention vs SDPA on the dequantised cache."""
    torch.manual_seed(seed)
    dev, b, h, rep, d = "cuda", batch, 3, 3, 64
    layer, twin = kvc.QuantizedKVLayer(fmt, GROUP), kvc.QuantizedKVLayer(fmt, GROUP)
    k = torch.randn(b, h, prefill, d, device=dev, dtype=torch.bfloat16)
    k[..., 5] += 8.0  # an outlier channel, as real keys have
    v = torch.randn(b, h, prefill, d, device=dev, dtype=torch.bfloat16)
    for lay in (layer, twin):
        with ForceDequantSDPA():
            lay.update(k, v)
        lay.reserve(prefill + steps)
    worst = {"append_max_abs": 0.0, "attn_max_abs": 0.0, "attn_max_rel": 0.0}
    for _ in range(steps):
        kn = torch.randn(b, h, 1, d, device=dev, dtype=torch.bfloat16)
        vn = torch.randn(b, h, 1, d, device=dev, dtype=torch.bfloat16)
        layer.update(kn, vn)  # the Triton append
        with ForceDequantSDPA():
            twin.update(kn, vn)  # the torch append
        q = torch.randn(b, h * rep, 1, d, device=dev, dtype=torch.bfloat16)
        out = kvt.decode_attention(layer, q).float()
        ref = kvc._dequant_sdpa(layer, q.float(), None, None)
        ka, va = layer.dequantized(torch.float32)
        kb, vb = twin.dequantized(torch.float32)
        worst["append_max_abs"] = max(worst["append_max_abs"], (ka - kb).abs().max().item(), (va - vb).abs().max().item())
        err = (out - ref).abs().max().item()
        worst["attn_max_abs"] = max(worst["attn_max_abs"], err)
        worst["attn_max_rel"] = max(worst["attn_max_rel"], err / ref.abs().max().item())
    return worst


def model_check(model, formats, batch=2, prompt=300, steps=8) -> dict:
    """Logits of decode steps through the Triton path vs dequant+SDPA on the same tokens."""
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt + steps), device="cuda")
    logits = {}
    for name, forced in (("triton", False), ("sdpa", True)):
        cache = kvc.use_quantized_cache(model, formats, GROUP)
        with ForceDequantSDPA():
            model(ids[:, :prompt], past_key_values=cache)
        ctx = ForceDequantSDPA() if forced else _Null()
        outs = []
        with ctx:
            for t in range(prompt, prompt + steps):
                outs.append(model(ids[:, t:t + 1], past_key_values=cache).logits.float())
        logits[name] = torch.cat(outs, 1)
    diff = (logits["triton"] - logits["sdpa"]).abs().max().item()
    same = (logits["triton"].argmax(-1) == logits["sdpa"].argmax(-1)).float().mean().item()
    return {"logits_max_abs": diff, "logits_scale": logits["sdpa"].abs().max().item(), "argmax_agree": same}


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


# ------------------------------------------------------------------------------ timing
def fill_random(cache, ctx: int) -> None:
    """Random codes, scales and residuals for ``ctx`` tokens in every layer."""
    for layer in cache.layers:
        for name in ("k_data", "v_data"):
            t = getattr(layer, name)
            if t.dtype == torch.uint8:
                t.random_(0, 256)
            else:
                t.normal_()
        for name in ("k_scale", "v_scale"):
            if hasattr(layer, name):
                getattr(layer, name).uniform_(0.01, 0.3)
        for name in ("k_zero", "v_zero"):
            if hasattr(layer, name):
                getattr(layer, name).uniform_(-2.0, -0.5)
        for name in ("k_res", "v_res"):
            if hasattr(layer, name):
                getattr(layer, name).normal_()
        layer.set_length(ctx)


def time_graph(fn, reps=5, inner=20) -> float:
    """Median ms of one replay of ``fn`` captured in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(inner):
        graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / inner)
    del graph
    return statistics.median(times)


def decode_step_ms(model, formats, batch: int, ctx: int, forced_sdpa: bool) -> tuple[float, float, int]:
    """(step ms, attention-alone ms over the same 30 layers, KV bytes) for one cache."""
    cfg = model.config
    cache = kvc.use_quantized_cache(model, formats, GROUP)
    room = ctx + 256  # replays advance the cache; it never runs out
    cache.reserve(batch, room, cfg.num_key_value_heads, cfg.head_dim, torch.bfloat16, "cuda")
    fill_random(cache, ctx)
    ids = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
    pos = torch.full((batch, 1), ctx, dtype=torch.long, device="cuda")

    def step():
        for layer in cache.layers:  # host lengths back to ctx: the captured step reads ctx + 1 tokens
            layer._length = ctx
        return model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True).logits

    q = torch.randn(batch, cfg.num_attention_heads, 1, cfg.head_dim, dtype=torch.bfloat16, device="cuda")

    def attention():  # what the step's 30 attention calls do, and nothing else
        for layer in cache.layers:
            layer._length = ctx
            if forced_sdpa:
                kvc._dequant_sdpa(layer, q, None, None)
            else:
                kvt.decode_attention(layer, q)

    if forced_sdpa:
        with ForceDequantSDPA():
            ms = time_graph(step)
    else:
        ms = time_graph(step)
    for layer in cache.layers:
        layer.set_length(ctx)
    attn = time_graph(attention)
    nbytes = cache.nbytes()
    del cache
    torch.cuda.empty_cache()
    return ms, attn, nbytes


def attention_only_ms(fmt, batch: int, ctx: int, block: int, splits: int | None, group: int | None = None) -> float:
    """30 layers' worth of the decode kernel alone (one layer's cache read 30 times)."""
    layer = kvc.QuantizedKVLayer(fmt, group or GROUP)
    blank = torch.zeros(batch, 3, 0, 64, dtype=torch.bfloat16, device="cuda")
    layer.lazy_initialization(blank, blank)
    layer.reserve(ctx + 256)
    cache = type("C", (), {"layers": [layer]})()
    fill_random(cache, ctx)
    q = torch.randn(batch, 9, 1, 64, dtype=torch.bfloat16, device="cuda")
    ms = time_graph(lambda: [kvt.decode_attention(layer, q, None, splits=splits, block=block) for _ in range(30)])
    del layer
    torch.cuda.empty_cache()
    return ms


def config_sweep(result: dict) -> None:
    """Warps per program (per code width) and programs per SM, kernel alone at 128 x 8192; keeps the best."""
    for attr, fmts in (("NUM_WARPS", ("K4V4", "K2V2", "K4V2")), ("NUM_WARPS_8BIT", ("K8V8", "K8V4"))):
        timed = {}
        for warps in (2, 4):
            setattr(kvt, attr, warps)
            try:
                timed[warps] = sum(attention_only_ms(KVFormat.parse(f), 128, 8192, kvt.BLOCK_N, None) for f in fmts)
            except Exception as exc:  # a configuration that does not compile (resources) is skipped
                print("sweep", attr, warps, "failed:", str(exc)[:200], flush=True)
                continue
            result["sweep"].append({"knob": attr, "value": warps, "formats": list(fmts), "ms_30_layers_sum": timed[warps]})
            print("sweep", attr, warps, fmts, f"{timed[warps]:.3f}", flush=True)
        setattr(kvt, attr, min(timed, key=timed.get))
    timed = {}
    for pps in (4, 8, 16):
        kvt.PROGRAMS_PER_SM = pps
        timed[pps] = attention_only_ms(KVFormat(4, 4), 128, 8192, kvt.BLOCK_N, None) + \
            attention_only_ms(KVFormat(4, 4), 64, 4096, kvt.BLOCK_N, None)
        result["sweep"].append({"knob": "PROGRAMS_PER_SM", "value": pps, "formats": ["K4V4 128x8192 + 64x4096"],
                                "ms_30_layers_sum": timed[pps]})
        print("sweep PROGRAMS_PER_SM", pps, f"{timed[pps]:.3f}", flush=True)
    kvt.PROGRAMS_PER_SM = min(timed, key=timed.get)


def main() -> None:
    global GROUP
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--shapes", default=",".join(f"{b}x{c}" for b, c in SHAPES))
    parser.add_argument("--sweep", action="store_true", help="time tile sizes and splits of the kernel alone")
    parser.add_argument("--block", type=int, default=None, help="override the kernel's tile (tokens)")
    parser.add_argument("--groups", default=None,
                        help="key-group sizes to time (kernel alone, K4V4 at 128x8192); the rest uses the best")
    parser.add_argument("--no-model-check", action="store_true")
    parser.add_argument("--model-check", default="KV8,KV4,KV2,mixed", help="caches the whole-model check runs")
    parser.add_argument("--extra-groups", default="", help="after the tables: K4V4 kernel alone at 128x8192 for these groups")
    parser.add_argument("--formats-check", default="K16V16,K8V8,K4V4,K2V2,K8V4,K4V2,K16V4,K2V16")
    parser.add_argument("--group", type=int, default=GROUP, help="key-group size (the quantised tile)")
    parser.add_argument("--check-steps", type=int, default=40, help="decode steps per layer check")
    args = parser.parse_args()
    GROUP = args.group
    if args.block:
        kvt.BLOCK_N = args.block
    import transformers
    import triton
    from transformers import LlamaForCausalLM

    kvc.register_kv_attention()
    env = {"torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(), "python": platform.python_version(),
           "command": "python benchmarks/kv_attention.py " + " ".join(sys.argv[1:]), "block": kvt.BLOCK_N,
           "programs_per_sm": kvt.PROGRAMS_PER_SM, "group": GROUP, "num_warps": kvt.NUM_WARPS,
           "num_warps_8bit": kvt.NUM_WARPS_8BIT, "check_steps": args.check_steps}
    print(json.dumps(env), flush=True)
    result: dict = {"env": env, "layer_check": {}, "model_check": {}, "sweep": [], "table": []}

    t0 = time.time()

    def save():
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    if args.groups:
        timed = []
        for group in (int(g) for g in args.groups.split(",")):
            ms = attention_only_ms(KVFormat(4, 4), 128, 8192, kvt.BLOCK_N, None, group)
            timed.append((ms, group))
            result.setdefault("group_sweep", []).append({"group": group, "num_warps": kvt.NUM_WARPS, "ms_30_layers": ms})
            print("group", group, f"{ms:.3f}", flush=True)
        GROUP = min(timed)[1]
        env["group"] = GROUP
        save()
    for f in (KVFormat.parse(x) for x in args.formats_check.split(",")):
        try:
            result["layer_check"][f.label] = layer_check(f, steps=args.check_steps)
        except Exception as exc:  # record and go on: the other formats' figures still count
            result["layer_check"][f.label] = {"error": str(exc)[:500]}
        print("layer", f.label, result["layer_check"][f.label], flush=True)
    print(f"layer checks {time.time() - t0:.0f}s", flush=True)

    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    max_ctx = max(c for _, c in shapes) + 512
    with torch.device("cuda"):
        model = LlamaForCausalLM(smollm2_config(max_ctx)).to(torch.bfloat16).eval()
    all_modes = modes(model.config.num_hidden_layers)
    torch.set_grad_enabled(False)
    for name in () if args.no_model_check else args.model_check.split(","):
        result["model_check"][name] = model_check(model, all_modes[name])
        print("model", name, result["model_check"][name], flush=True)
    save()

    if args.sweep:
        config_sweep(result)
    env.update(num_warps=kvt.NUM_WARPS, num_warps_8bit=kvt.NUM_WARPS_8BIT, programs_per_sm=kvt.PROGRAMS_PER_SM)
    print("config", {k: env[k] for k in ("num_warps", "num_warps_8bit", "programs_per_sm")}, flush=True)
    save()

    for batch, ctx in shapes:
        rows = {}
        for name, formats in all_modes.items():
            ms, attn, nbytes = decode_step_ms(model, formats, batch, ctx, forced_sdpa=name == "bf16-sdpa")
            rows[name] = {"ms": ms, "attn_ms": attn, "kv_bytes": nbytes,
                          "bytes_per_token": kvc.bytes_per_token(formats, 3, 64, GROUP)}
            print(batch, ctx, name, f"step {ms:.3f} ms attention {attn:.3f} ms", nbytes, flush=True)
        base = min(rows["bf16-sdpa"]["ms"], rows["bf16-triton"]["ms"])
        base_attn = min(rows["bf16-sdpa"]["attn_ms"], rows["bf16-triton"]["attn_ms"])
        base_bytes = rows["bf16-sdpa"]["kv_bytes"]
        for name, row in rows.items():
            row.update(speedup=base / row["ms"], attn_speedup=base_attn / row["attn_ms"],
                       memory_ratio=row["kv_bytes"] / base_bytes)
            result["table"].append({"batch": batch, "ctx": ctx, "mode": name, **row})
            print(f"{batch}x{ctx} {name:12s} step {row['ms']:.3f} ms {row['speedup']:.2f}x | attention "
                  f"{row['attn_ms']:.3f} ms {row['attn_speedup']:.2f}x | KV {row['memory_ratio']:.1%}", flush=True)
        save()
    for group in (int(g) for g in args.extra_groups.split(",") if g):
        ms = attention_only_ms(KVFormat(4, 4), 128, 8192, kvt.BLOCK_N, None, group)
        result.setdefault("group_sweep", []).append({"group": group, "ms_30_layers": ms})
        print("group", group, f"{ms:.3f}", flush=True)
        save()
    print(f"total {time.time() - t0:.0f}s", flush=True)

    save()
    if args.out:
        args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(result: dict) -> str:
    env = result["env"]
    lines = [f"# KV-cache decode attention on {env['gpu']}", "",
             f"`{env['command']}` — torch {env['torch']}, Triton {env['triton']}, transformers "
             f"{env['transformers']}; random weights of SmolLM2-135M's shapes, bf16, one decode step in a "
             f"CUDA graph (median of 5 x 20 replays); key group {env['group']} tokens (the quantised tile), bf16 tile {env['block']}, "
             f"{env['num_warps']} warps ({env.get('num_warps_8bit', env['num_warps'])} with 8-bit codes), "
             f"{env['programs_per_sm']} programs per SM aimed for. Attention = the 30 layers' decode "
             f"attention alone over the same cache (bf16-sdpa: SDPA; others: the Triton kernel).", "",
             f"## Correctness (worst over {env.get('check_steps', 40)} decode steps, batch 4, 1000-token prefill)", "",
             "| format | Triton append vs torch (max abs) | attention vs SDPA on dequantised cache (max abs) | (max rel) |",
             "| --- | --- | --- | --- |"]
    for f, r in result["layer_check"].items():
        if "error" in r:
            lines.append(f"| {f} | failed: {r['error'][:120]} | | |")
        else:
            lines.append(f"| {f} | {r['append_max_abs']:.3g} | {r['attn_max_abs']:.3g} | {r['attn_max_rel']:.3g} |")
    lines += [] if not result["model_check"] else ["", "Whole model, 8 decode steps after a 300-token prompt, Triton vs dequant+SDPA:", "",
              "| cache | logits max abs diff | logits max abs | argmax agreement |", "| --- | --- | --- | --- |"]
    for f, r in result["model_check"].items():
        lines.append(f"| {f} | {r['logits_max_abs']:.3g} | {r['logits_scale']:.3g} | {r['argmax_agree']:.3f} |")
    lines += ["", "## Decode step", "",
              "Speed-up is against the faster bf16 row; memory is the KV cache's allocated bytes "
              "(codes, scales, residual window) over the bf16 cache's.", ""]
    by_shape: dict = {}
    for row in result["table"]:
        by_shape.setdefault((row["batch"], row["ctx"]), []).append(row)
    for (batch, ctx), rows in by_shape.items():
        lines += [f"### batch {batch}, context {ctx}", "",
                  "| KV cache | step ms | step speed-up | attention ms (30 layers) | attention speed-up | KV memory vs bf16 | bytes/token (30 layers) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['mode']} | {r['ms']:.3f} | {r['speedup']:.2f}x | {r['attn_ms']:.3f} | "
                         f"{r['attn_speedup']:.2f}x | {r['memory_ratio']:.1%} | {r['bytes_per_token']:.0f} |")
        lines.append("")
    if result.get("group_sweep"):
        lines += ["Key-group size at 128x8192 (K4V4 kernel alone, one layer read 30 times, ms): "
                  + ", ".join(f"{s['group']}: {s['ms_30_layers']:.3f}" for s in result["group_sweep"]), ""]
    if result["sweep"]:
        lines += ["Launch configuration, kernel alone at 128x8192 (30 layers, ms summed over the formats named; "
                  "the tables use the best): " + "; ".join(
                      f"{s['knob']}={s['value']} ({'+'.join(s['formats'])}): {s['ms_30_layers_sum']:.3f}"
                      for s in result["sweep"]), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
