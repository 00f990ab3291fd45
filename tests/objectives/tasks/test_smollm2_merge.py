"""Task ``smollm2-merge`` on a tiny random Llama and two fake specialists (the base with a
different random perturbation each): merging per block, then compressing, in one space."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the smollm2-merge task needs paretoml[llm]")

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.tasks.domain_lm import perplexity_metric  # noqa: E402
from paretoml.objectives.tasks.lm_domains import ALL_DOMAINS, domain_texts  # noqa: E402
from paretoml.objectives.tasks.registry import create_task  # noqa: E402
from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeOptions, SmolLM2MergeTask  # noqa: E402
from paretoml.search_space.knobs import BatchSizeKnob, BitwidthKnob, KVBitsKnob, LayerSelector  # noqa: E402
from paretoml.search_space.knobs import LearningRateKnob, MergeKnob  # noqa: E402
from paretoml.search_space.space import JointSpace, TrialConfig  # noqa: E402
from tests.objectives.tasks.tiny_llama import tiny_llama_folder  # noqa: E402

OPTIONS = SmolLM2MergeOptions(context=32, n_validation=2, n_test=0, n_calibration=8, batch_size=4, n_prompts=3,
                              prompt_tokens=8, new_tokens=4, decode_steps=1, decode_warmup=0, serving_context=32)
BLOCK_KNOB = MergeKnob(layers=LayerSelector(kinds=["linear"], include=r"model\.layers\."), group="block",
                       block_depth=3)
EMBED_KNOB = MergeKnob(layers=LayerSelector(kinds=["linear", "embedding"], include="(lm_head|embed_tokens)$"),
                       group="shared")


def fake_specialist(base: Path, into: Path, seed: int) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    model.save_pretrained(into)
    AutoTokenizer.from_pretrained(base).save_pretrained(into)
    return into


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("merge")
    base = tiny_llama_folder(root)
    return base, [fake_specialist(base, root / f"spec{i}", seed=10 + i) for i in range(2)]


@pytest.fixture(scope="module")
def evaluator(folders: tuple[Path, list[Path]]) -> TrialEvaluator:
    base, specialists = folders
    return TrialEvaluator(SmolLM2MergeTask(OPTIONS, base=base, specialists=specialists), MeasureSettings(), "cpu")


def state_of(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def coeffs(ev: TrialEvaluator, value: tuple[float, float], only: str | None = None) -> dict[str, tuple[float, ...]]:
    """Merge coefficients for every knobbed layer (those under ``only`` get ``value``, the rest 0)."""
    names = [layer.name for layer in ev.layers]
    return {n: (value if only is None or n.startswith(only) else (0.0, 0.0)) for n in names}


def test_registered_with_domain_metrics() -> None:
    task = create_task("smollm2-merge", {"merge_method": "ties", "ties_density": 0.5})
    assert isinstance(task, SmolLM2MergeTask)
    names = {m.name for m in task.metrics}
    assert {perplexity_metric(d) for d in ALL_DOMAINS} <= names
    assert {"generation_fidelity", "decode_ms_per_token", "serving_memory_bytes"} <= names


def test_domains_keep_splits_apart() -> None:
    for domain in ("docs", "code"):
        train, val, test = (set(domain_texts(domain, s)) for s in ("train", "validation", "test"))
        assert train and val and test and not (train & val or train & test or val & test)
    assert not set(domain_texts("general", "validation")) & set(domain_texts("general", "test"))


def test_alpha_zero_gives_base_and_one_hot_a_specialist(evaluator: TrialEvaluator,
                                                        folders: tuple[Path, list[Path]]) -> None:
    base = evaluator.model.state_dict()
    at_zero, _ = evaluator.build(TrialConfig(merge=coeffs(evaluator, (0.0, 0.0))))
    for key, tensor in at_zero.state_dict().items():
        assert torch.equal(tensor, base[key]), key
    for index, folder in enumerate(folders[1]):
        one_hot = (1.0, 0.0) if index == 0 else (0.0, 1.0)
        merged, _ = evaluator.build(TrialConfig(merge=coeffs(evaluator, one_hot)))
        specialist = state_of(folder)
        for key, tensor in merged.state_dict().items():
            assert torch.equal(tensor, specialist[key]), key  # norms too: they follow their block


def test_per_block_alpha_touches_only_its_block(evaluator: TrialEvaluator, folders: tuple[Path, list[Path]]) -> None:
    base = evaluator.model.state_dict()
    specialist = state_of(folders[1][1])
    merged, _ = evaluator.build(TrialConfig(merge=coeffs(evaluator, (0.0, 1.0), only="model.layers.1.")))
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert "model.layers.1.input_layernorm.weight" in changed  # the block's norms are in its group
    for key in changed:
        assert torch.equal(merged.state_dict()[key], specialist[key])


def test_ties_resolves_signs(folders: tuple[Path, list[Path]]) -> None:
    base_folder, specialists = folders
    task = SmolLM2MergeTask(OPTIONS.model_copy(update={"merge_method": "ties"}), base=base_folder,
                            specialists=specialists)
    ev = TrialEvaluator(task, MeasureSettings(), "cpu")
    base, a, b = ev.model.state_dict(), state_of(specialists[0]), state_of(specialists[1])
    merged, _ = ev.build(TrialConfig(merge=coeffs(ev, (1.0, 1.0))))
    key = "model.layers.0.mlp.up_proj.weight"
    da, db = a[key] - base[key], b[key] - base[key]
    got = merged.state_dict()[key] - base[key]
    agree = torch.sign(da) == torch.sign(db)
    # where the task vectors agree both add; where they disagree only the larger one's sign survives
    assert torch.allclose(got[agree], (da + db)[agree], atol=1e-6)
    winner = torch.where(da.abs() >= db.abs(), da, db)
    assert torch.allclose(got[~agree], winner[~agree], atol=1e-6)
    assert (~agree).any()


def test_merge_then_bits_and_kv_in_one_space_and_scored_per_domain(evaluator: TrialEvaluator) -> None:
    space = JointSpace([BLOCK_KNOB, EMBED_KNOB,
                        BitwidthKnob(layers=LayerSelector(kinds=["linear"], include=r"model\.layers\."),
                                     group="block", block_depth=3, choices=[4, 8, 16]),
                        KVBitsKnob(pairs=["K16V16", "K8V4"])], evaluator.layers, n_checkpoints=2)
    merge_params = [n for n in space.param_names if n.startswith("merge")]
    assert len(merge_params) == 2 * (2 + 1)  # two blocks and the tied embedding, each x two specialists
    params = space.uniform_params(bits=4, merge=0.5, kv=(8, 4))
    config = space.config_from_params(params)
    objectives = [perplexity_metric(d) for d in ALL_DOMAINS] + ["generation_fidelity", "model_bytes"]
    result = evaluator.evaluate(config, objectives)
    reference = evaluator.evaluate(TrialConfig(), objectives)
    for domain in ALL_DOMAINS:
        assert math.isfinite(result.values[perplexity_metric(domain)])
    assert result.values["model_bytes"] < reference.values["model_bytes"]
    assert reference.values["generation_fidelity"] == 1.0


def test_recovery_finetune_takes_batch_and_lr_rule(folders: tuple[Path, list[Path]]) -> None:
    base_folder, specialists = folders
    ev = TrialEvaluator(SmolLM2MergeTask(OPTIONS, base=base_folder, specialists=specialists),
                        MeasureSettings(finetune_steps=2), "cpu")
    space = JointSpace([BLOCK_KNOB, BatchSizeKnob(choices=[2, 4]),
                        LearningRateKnob(base_lr=1e-3, base_batch=2, rule="sqrt")], ev.layers, n_checkpoints=2)
    params = {**space.uniform_params(merge=0.5), "batch_size": 4}
    config = space.config_from_params(params)
    assert config.batch_size == 4 and config.learning_rate == pytest.approx(1e-3 * math.sqrt(2))
    tuned, timings = ev.build(config)
    merged_only = TrialEvaluator(SmolLM2MergeTask(OPTIONS, base=base_folder, specialists=specialists),
                                 MeasureSettings(), "cpu").build(config)[0]
    assert "finetune_s" in timings
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(tuned.state_dict()[key], merged_only.state_dict()[key])
