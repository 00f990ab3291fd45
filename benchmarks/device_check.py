"""A first look at the GPU paths on a machine with a GPU, in a minute, before a long study.

With a BERT encoder of all-MiniLM-L6-v2's shape (random weights: no download needed):

1. the deployable model of a 4-bit config runs as a CUDA graph for keyword inputs
   (``input_ids``, ``attention_mask``), gives the eager outputs, and its latency against
   eager;
2. ``paretoml.search`` on a Ray pool of 4 workers sharing the GPU ('auto': a quarter
   each): where the workers were placed, trials per second, and the GPU's busy share.

    python benchmarks/device_check.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from paretoml.search_space.trial_attrs import ERROR_ATTR, PROVENANCE_ATTR, WORKER_ATTR

sys.path.insert(0, str(Path(__file__).resolve().parent))


def encoder() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    from paretoml.objectives.tasks.minilm import SentenceEncoder

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, attn_implementation="sdpa")
    return SentenceEncoder(BertModel(config, add_pooling_layer=False)).eval()


def inputs(batch: int, tokens: int, device: torch.device) -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 30000, (batch, tokens), device=device)
    mask = torch.ones(batch, tokens, dtype=torch.long, device=device)
    mask[batch // 2:, tokens // 2:] = 0  # padded sentences, as in real batches
    return {"input_ids": ids, "attention_mask": mask}


def check_graphs(device: torch.device) -> None:
    from paretoml.objectives.deploy import deployable
    from paretoml.objectives.measure import LatencySettings, latency_ms
    from paretoml.objectives.tasks.base import ExampleInputs
    from paretoml.search_space.space import TrialConfig

    model = encoder().to(device)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    example = ExampleInputs((), inputs(32, 32, device))
    for bits in (16, 8, 4):
        if device.type == "cpu" and bits == 4:
            continue
        deployment = deployable(model, TrialConfig(bits={n: bits for n in linear}), device, example=example)
        run = deployment.model
        with torch.inference_mode():
            eager = run._eager(**example.kwargs) if hasattr(run, "_eager") else run(**example.kwargs)
            run(**example.kwargs)
            graphed = run(**example.kwargs)
        captured = getattr(run, "_graph", None) is not None
        diff = float((graphed - eager).abs().max())
        settings = LatencySettings(warmup=5, repeats=30)
        graph_ms = latency_ms(run, example, settings)
        if captured:
            run.graphs = False
            run._graph = None
        eager_ms = latency_ms(run, example, settings)
        print(f"{bits:>2}-bit: {deployment.kernel_counts()}; graph captured {captured}, max |graph - eager| {diff:.2e}; "
              f"latency graph {graph_ms:.3f} ms, eager {eager_ms:.3f} ms", flush=True)


def check_pool(device: torch.device) -> None:
    import paretoml
    from _gpu_busy import GpuBusy

    model = encoder()
    small = device.type == "cpu"  # a dry run of the path, not a measurement
    data = [inputs(8 if small else 250, 48, torch.device("cpu")) for _ in range(1 if small else 4)]
    with torch.inference_mode():
        reference = [model(**b) for b in data]

    def evaluate(compressed: torch.nn.Module) -> dict[str, float]:
        where = next(compressed.parameters()).device
        with torch.inference_mode():
            cos = [torch.nn.functional.cosine_similarity(compressed(**{k: v.to(where) for k, v in b.items()}).float().cpu(),
                                                         r).mean() for b, r in zip(data, reference)]
        return {"fidelity": float(torch.stack(cos).mean())}

    knobs = [{"kind": "bitwidth", "layers": {"kinds": ["linear"]}, "choices": [4, 8, 16]},
             {"kind": "activation_bits", "layers": {"kinds": ["linear"]}, "choices": [8, 16]}]
    with GpuBusy() as busy:
        start = time.monotonic()
        study = paretoml.search(model, evaluate=evaluate, metrics={"fidelity": "maximize"},
                                example_inputs=inputs(4 if small else 32, 32, torch.device("cpu")), knobs=knobs,
                                objectives=["fidelity", "model_bytes", "latency_ms"], n_trials=4 if small else 24,
                                sampler="random", measure={"device": device.type, "latency_repeats": 3 if small else 20,
                                         "latency_warmup": 1 if small else 10},
                                workers=2 if small else 4, storage="sqlite:////tmp/device_check.db")
        wall = time.monotonic() - start
        share = busy.share(start, time.monotonic())
    trials = study.trials
    placed = sorted({(t.user_attrs[WORKER_ATTR]["worker"], tuple(t.user_attrs[WORKER_ATTR]["gpus"]))
                     for t in trials})
    states = [t.state.name for t in trials]
    print(f"pool: {states.count('COMPLETE')} of {len(trials)} complete in {wall:.1f} s (start-up included); "
          f"workers {placed}; GPU busy {share if share is None else round(100 * share)}% ({busy.source})", flush=True)
    failed = [t for t in trials if t.state.name == "FAIL"]
    if failed:
        print(failed[0].user_attrs.get(ERROR_ATTR, "")[-1500:])
    for t in trials[:3]:
        print(t.values, t.user_attrs.get(PROVENANCE_ATTR, {}).get("latency_ms", {}).get("detail", "")[:200])


if __name__ == "__main__":
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}", flush=True)
    check_graphs(device)
    check_pool(device)
