"""The causal-LM task on a tiny random Llama (grouped-query attention, tied embeddings):
loading, its splits, perplexity, generation fidelity, each knob's effect, GQA-aware pruning,
decode latency and serving memory, export and reload with the KV formats."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from paretoml.objectives.deploy import kv_model  # noqa: E402
from paretoml.objectives.deploy.export import export_compressed, load_compressed, read_manifest  # noqa: E402
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.tasks.causal_lm import (  # noqa: E402
    PATH_VARIABLE,
    CausalLMOptions,
    CausalLMTask,
    causal_lm_links,
    language_model,
)
from paretoml.objectives.compress.prune import prune_structured  # noqa: E402
from paretoml.objectives.tasks.lm_text import split_texts  # noqa: E402
from paretoml.search_space.space import TrialConfig  # noqa: E402
from tests.objectives.tasks.tiny_llama import tiny_llama_folder  # noqa: E402

OPTIONS = CausalLMOptions(context=64, n_calibration=4, n_validation=8, n_test=4, batch_size=8, n_prompts=4,
                          prompt_tokens=16, new_tokens=8, serving_context=256, decode_steps=3, decode_warmup=1)
METRICS = ["perplexity_ratio", "generation_fidelity", "decode_ms_per_token", "serving_memory_bytes"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def evaluator(folder: Path) -> TrialEvaluator:
    from paretoml.search_space.deploy_mode import DeployMode

    # emulating: its tests put 2..8 bits on every projection, most with no CPU kernel of their own
    return TrialEvaluator(CausalLMTask(OPTIONS, path=folder), MeasureSettings(deploy=DeployMode(emulate=True)), "cpu")


def linear_layers(ev: TrialEvaluator) -> list[str]:
    return [layer.name for layer in ev.layers if layer.kind == "linear"]


def key_projections(ev: TrialEvaluator) -> list[str]:
    return [layer.name for layer in ev.layers if layer.name.endswith("k_proj")]


def test_splits_keep_apart() -> None:
    calibration, validation, test = (set(split_texts(s)) for s in ("calibration", "validation", "test"))
    assert calibration and validation and test
    assert not calibration & validation and not calibration & test and not validation & test


def test_loads_from_a_path_or_the_server_setting(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATH_VARIABLE, str(folder))
    bundle = CausalLMTask(OPTIONS).load(torch.device("cpu"))
    assert bundle.validation.count() == 8 and bundle.calibration.count() == 4 and bundle.test.count() == 4
    first = next(iter(bundle.validation))["input_ids"]
    assert first.shape == (8, 64)
    assert bundle.example.kwargs["input_ids"].shape == (1, 1)  # batch 1 decode on CPU
    monkeypatch.delenv(PATH_VARIABLE)
    with pytest.raises(FileNotFoundError, match=PATH_VARIABLE):
        CausalLMTask(OPTIONS).load(torch.device("cpu"))


def test_reference_scores_itself_exactly(evaluator: TrialEvaluator) -> None:
    result = evaluator.reference(METRICS)
    assert result.values["perplexity_ratio"] == pytest.approx(1.0)
    assert result.values["generation_fidelity"] == 1.0
    assert result.values["decode_ms_per_token"] > 0
    assert result.attrs["metrics"]["perplexity"] > 1.0


def test_weight_bits_move_perplexity_and_fidelity(evaluator: TrialEvaluator) -> None:
    result = evaluator.evaluate(TrialConfig(bits={name: 2 for name in linear_layers(evaluator)}), METRICS)
    assert result.values["perplexity_ratio"] != pytest.approx(1.0, abs=1e-3)
    assert result.values["generation_fidelity"] < 1.0


def test_kv_bits_move_perplexity_and_memory(evaluator: TrialEvaluator) -> None:
    keys = key_projections(evaluator)
    full = evaluator.evaluate(TrialConfig(kv_bits={k: (16, 16) for k in keys}), METRICS)
    low = evaluator.evaluate(TrialConfig(kv_bits={k: (2, 2) for k in keys}), METRICS)
    keys_only = evaluator.evaluate(TrialConfig(kv_bits={k: (2, 16) for k in keys}), METRICS)
    assert full.values["perplexity_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert low.values["perplexity_ratio"] != pytest.approx(1.0, abs=1e-3)
    assert keys_only.values["perplexity_ratio"] != low.values["perplexity_ratio"]  # K and V apart
    assert low.values["serving_memory_bytes"] < keys_only.values["serving_memory_bytes"] < full.values["serving_memory_bytes"]
    # the quantised cache has no CPU kernel: its decode time is marked estimated
    assert low.provenance["decode_ms_per_token"]["how"] == "estimated"
    assert full.provenance["decode_ms_per_token"]["how"] == "measured"
    assert low.provenance["serving_memory_bytes"]["how"] == "measured"


def test_kv_formats_per_layer(evaluator: TrialEvaluator) -> None:
    keys = key_projections(evaluator)
    model, _ = evaluator.build(TrialConfig(kv_bits={keys[0]: (8, 4), keys[1]: (16, 2)}))
    assert [f.label for f in kv_model.formats_of(model)] == ["K8V4", "K16V2"]


def test_structured_pruning_removes_kv_groups_and_neurons(evaluator: TrialEvaluator) -> None:
    attn, mlp = "model.layers.0.self_attn", "model.layers.0.mlp"
    config = TrialConfig(prune={f"{attn}.q_proj": 0.5, f"{mlp}.gate_proj": 0.5},
                         prune_method={f"{attn}.q_proj": "structured", f"{mlp}.gate_proj": "structured"})
    model, _ = evaluator.build(config)
    layer = model.get_submodule(attn)
    assert (layer.q_proj.out_features, layer.k_proj.out_features, layer.v_proj.out_features) == (32, 16, 16)
    assert layer.o_proj.in_features == 32
    assert model.get_submodule(f"{mlp}.up_proj").out_features == 48
    result = evaluator.evaluate(config, METRICS)
    reference = evaluator.reference(METRICS)
    assert result.values["serving_memory_bytes"] < reference.values["serving_memory_bytes"]
    assert result.values["perplexity_ratio"] != pytest.approx(1.0, abs=1e-3)


def test_gqa_pruning_equals_masking_the_group(evaluator: TrialEvaluator) -> None:
    """Removing a KV group with its query heads gives the logits of the model whose attention
    output drops that group's query heads (o_proj's columns of them zeroed)."""
    model = copy.deepcopy(evaluator.model)
    attn = "model.layers.1.self_attn"
    pruned = prune_structured(copy.deepcopy(model), {f"{attn}.q_proj": 0.5}, causal_lm_links(model))
    kept_k = pruned.get_submodule(f"{attn}.k_proj").weight
    k = model.get_submodule(f"{attn}.k_proj").weight
    removed_group = 0 if torch.equal(kept_k, k[16:]) else 1
    assert torch.equal(kept_k, k[16 * (1 - removed_group): 16 * (2 - removed_group)])
    with torch.no_grad():  # 2 query heads of width 16 per KV group
        model.get_submodule(f"{attn}.o_proj").weight[:, 32 * removed_group: 32 * (removed_group + 1)] = 0
    ids = next(iter(evaluator.data.validation))["input_ids"][:2]
    torch.testing.assert_close(pruned(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_kv_quantise_round_trip() -> None:
    from paretoml.objectives.deploy.kv_cache import (
        dequantize_keys,
        dequantize_values,
        quantize_keys,
        quantize_values,
    )

    x = torch.randn(2, 3, 64, 16)
    errors = []
    for bits in (8, 4, 2):
        k = dequantize_keys(quantize_keys(x, bits))
        v = dequantize_values(quantize_values(x, bits))
        errors.append(max((k - x).abs().max().item(), (v - x).abs().max().item()))
    assert errors[0] < 0.05 and errors[0] < errors[1] < errors[2]


def test_export_and_reload_generates_with_the_quantised_cache(evaluator: TrialEvaluator, tmp_path: Path) -> None:
    keys = key_projections(evaluator)
    config = TrialConfig(bits={name: 8 for name in linear_layers(evaluator)}, kv_bits={keys[0]: (4, 2), keys[1]: (8, 8)})
    model, _ = evaluator.build(config)
    manifest = export_compressed(model, config, tmp_path, task="causal-lm")
    assert manifest.kv_formats == ["K4V2", "K8V8"]
    assert read_manifest(tmp_path).config["kv_bits"] == {keys[0]: [4, 2], keys[1]: [8, 8]}
    skeleton = copy.deepcopy(evaluator.model)
    loaded = load_compressed(tmp_path, "cpu", skeleton=skeleton)
    assert [f.label for f in kv_model.formats_of(loaded)] == ["K4V2", "K8V8"]
    prompts = next(iter(evaluator.data.validation))["input_ids"][:2, :16]
    scorer = evaluator.data.scorer
    # generate() with no cache given uses the quantised one: the continuation of the trial's model
    plain = language_model(loaded).generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                                            do_sample=False, max_new_tokens=8, pad_token_id=2)[:, 16:]
    assert torch.equal(plain, scorer.continuations(model, prompts))
    assert evaluator.score(loaded, ["perplexity_ratio"])["perplexity_ratio"] == pytest.approx(
        evaluator.score(model, ["perplexity_ratio"])["perplexity_ratio"], rel=1e-4)
