"""Specialists of one causal LM, made here: low-rank adapters trained on one text domain each
(:mod:`.lm_domains`) and merged into the weights, so a specialist is an ordinary causal-LM
folder of the base's architecture (what merging needs: ``specialist - base`` per tensor).

Why adapters: on CPU a LoRA step costs a forward and the activation gradients, with no
weight gradients of the 135M-parameter base and no Adam state for them, and the update it
leaves (rank ``r`` per projection) is still spread over every block, which is what per-block
merge coefficients search over. The cost measured on the dev machine is in
``benchmarks/results/checkpoints-dev-2cores.json``.

Made once per machine and recipe, under the paretoml cache (``checkpoints/``), under a file
lock, in a temporary folder renamed into place; the recipe (base, domain, steps, batch,
context, LR, rank, seed, method) is stored as ``recipe.json`` beside the weights and is part
of the folder's name, so a changed recipe makes a new folder and never reads an old one.
Deterministic for a seed: adapter initialisation and window order come from seeded
generators, and the training runs on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paretoml.objectives.tasks.cache import cache_dir
from paretoml.objectives.tasks.lm_domains import SPECIALIST_DOMAINS, Domain, domain_texts
from paretoml.objectives.tasks.lm_text import token_windows
from paretoml.objectives.tasks.model_parts import MANIFEST, built_once, folder_is_complete
from paretoml.objectives.train import causal_lm_loss

RECIPE_FILE = "recipe.json"
METHOD = "lora-merged"
#: bump when the training code changes what a recipe makes
RECIPE_VERSION = 1
LOCK_TIMEOUT_S = 1800.0
#: the projections of a Llama-like decoder layer that get adapters
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    """How one specialist is made.

    Args:
        domain: the text domain it is fine-tuned on (its train split).
        steps: optimizer steps.
        batch: windows per step.
        context: tokens per window.
        lr: Adam learning rate of the adapters.
        rank: adapter rank; ``alpha`` scales the update by ``alpha / rank``.
        seed: adapter initialisation and window order.
    """

    domain: Domain
    steps: int = 12
    batch: int = 4
    context: int = 64
    lr: float = 3e-3
    rank: int = 8
    alpha: float = 16.0
    seed: int = 0
    method: str = METHOD
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        if self.domain not in SPECIALIST_DOMAINS:
            raise ValueError(f"domain {self.domain!r} has no train split; choose from {list(SPECIALIST_DOMAINS)}")
        if self.steps < 1 or self.batch < 1 or self.context < 8 or self.rank < 1 or not self.lr > 0:
            raise ValueError("a recipe needs steps >= 1, batch >= 1, context >= 8, rank >= 1 and lr > 0")


class LoRALinear(nn.Module):
    """``base(x) + (x A^T) B^T * alpha / rank``, with ``B`` starting at zero (so the adapted
    model starts as the base) and the base's weights frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_a = nn.Parameter((torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with the adapter's update added into its weight."""
        self.base.weight.add_(self.lora_b @ self.lora_a * self.scale)
        return self.base


def attach_adapters(model: nn.Module, rank: int, alpha: float, seed: int) -> list[LoRALinear]:
    """Freeze ``model`` and wrap each target projection of each decoder layer in an adapter."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    adapters: list[LoRALinear] = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in LORA_TARGETS and isinstance(child, nn.Linear):
                adapter = LoRALinear(child, rank, alpha, generator)
                setattr(module, child_name, adapter)
                adapters.append(adapter)
    if not adapters:
        raise ValueError(f"no projection named {LORA_TARGETS} in the model: not a Llama-like decoder")
    return adapters


def detach_adapters(model: nn.Module) -> None:
    """Put each adapted projection back as a plain Linear holding the merged weight."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())


def train_specialist(model: nn.Module, tokenizer: Any, recipe: Recipe) -> dict[str, float]:
    """Fine-tune ``model`` in place by adapters merged into it; returns the loss and time."""
    windows = token_windows(tokenizer, domain_texts(recipe.domain, "train"), recipe.context, 1 << 20)
    adapters = attach_adapters(model, recipe.rank, recipe.alpha, recipe.seed)
    params = [p for a in adapters for p in (a.lora_a, a.lora_b)]
    optimizer = torch.optim.Adam(params, lr=recipe.lr)
    generator = torch.Generator().manual_seed(recipe.seed)
    order, cursor = torch.randperm(len(windows), generator=generator), 0
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for _ in range(recipe.steps):
        if cursor + recipe.batch > len(windows):
            order, cursor = torch.randperm(len(windows), generator=generator), 0
        ids = windows[order[cursor : cursor + recipe.batch]]
        cursor += recipe.batch
        optimizer.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model, ids, ids)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    detach_adapters(model)
    for p in model.parameters():
        p.requires_grad_(True)
    head = max(1, len(losses) // 5)
    return {"train_seconds": time.perf_counter() - t0, "first_loss": sum(losses[:head]) / head,
            "last_loss": sum(losses[-head:]) / head, "train_windows": len(windows)}


def specialist_folder_name(base: Path, recipe: Recipe) -> str:
    key = hashlib.sha256(json.dumps({"base": base.name, **asdict(recipe)}, sort_keys=True).encode()).hexdigest()
    return f"{base.name}-{recipe.domain}-{key[:12]}"


def specialist_folder(base: Path, recipe: Recipe, make: bool = True) -> Path:
    """The cached folder of ``base``'s specialist for ``recipe``, made if missing (``make``),
    else :class:`FileNotFoundError`."""
    final = cache_dir() / "checkpoints" / specialist_folder_name(base, recipe)
    if folder_is_complete(final):
        return final
    if not make:
        raise FileNotFoundError(f"no {recipe.domain} specialist of {base.name} for this recipe at {final}: "
                                "run `paretoml make-checkpoints` or set make_checkpoints: true")

    def build(tmp: Path) -> Path:
        _make(base, recipe, tmp / "folder")
        return tmp / "folder"

    return built_once(final, build, LOCK_TIMEOUT_S, f"making the {recipe.domain} specialist of {base.name}")


def _make(base: Path, recipe: Recipe, into: Path) -> None:
    from paretoml.objectives.tasks.causal_lm import load_causal_lm

    torch.manual_seed(recipe.seed)
    model, tokenizer = load_causal_lm(base, torch.device("cpu"))
    stats = train_specialist(model, tokenizer, recipe)
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)
    record = {"recipe": asdict(recipe), "base": str(base), "data": f"lm_domains {recipe.domain!r} train split",
              "threads": torch.get_num_threads(), **stats}
    (into / RECIPE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
    sizes = {str(p.relative_to(into)): p.stat().st_size for p in sorted(into.rglob("*")) if p.is_file()}
    (into / MANIFEST).write_text(json.dumps(sizes, indent=1, sort_keys=True))


def read_recipe(folder: Path) -> dict[str, Any]:
    """The recipe and training record stored beside a specialist's weights."""
    return json.loads((Path(folder) / RECIPE_FILE).read_text())


def specialist_folders(base: Path, recipes: list[Recipe], make: bool = True) -> list[Path]:
    """Each recipe's specialist folder, in order (made one after another where missing)."""
    return [specialist_folder(base, r, make=make) for r in recipes]
