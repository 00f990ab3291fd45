"""``smollm2-merge``: two specialists of SmolLM2-135M-Instruct (docs and code, made here by
:mod:`.checkpoints`) merged per block with the base, then compressed, in one space.

A trial's weights are ``base + sum_s alpha[group, s] * (specialist_s - base)``: a merge
knob's groups are the decoder blocks (``block_depth: 3``) and the tied embedding / LM head;
a block's norms take its block's coefficients, the final norm the embedding's beside it (tied
to the LM head it feeds), see
:func:`paretoml.objectives.compress.merge.merge_state_dicts`; ``merge_method: ties``
resolves signs TIES-style. The trial's weight bits, KV bits and pruning then apply to
the merged model, and an optional recovery fine-tune (``finetune_steps`` in the spec's
settings, batch size and LR rule knobs) trains it on the calibration mix (both domains'
train splits, never a scored window).

Objectives: perplexity on each domain's held-out windows and on general text (scikit-learn's
data-set descriptions, which no specialist saw), generation fidelity to the base's greedy
continuations, decode latency and serving memory (as ``smollm2``), and the system's bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from paretoml.objectives.deploy import kv_model
from paretoml.objectives.compress.merge import MergeSettings
from paretoml.objectives.tasks.base import ExampleInputs, ModelBundle, Split, Task
from paretoml.objectives.tasks.causal_lm import (
    INSTALL_HINT,
    CausalLMOptions,
    causal_lm_links,
    load_causal_lm,
    serving_shape,
)
from paretoml.objectives.tasks.checkpoints import Recipe, specialist_folders
from paretoml.objectives.tasks.domain_lm import DomainLMScorer, domain_metrics, tagged_batches
from paretoml.objectives.tasks.lm_domains import ALL_DOMAINS, SPECIALIST_DOMAINS, DomainSplit, domain_texts
from paretoml.objectives.tasks.lm_text import token_windows
from paretoml.objectives.tasks.sentence_encoder import offline_transformers
from paretoml.objectives.tasks.smollm2 import DISTRIBUTION, SmolLM2Task
from paretoml.objectives.train import FinetuneData, causal_lm_loss
from paretoml.search_space.space import TrialConfig


class SmolLM2MergeOptions(CausalLMOptions):
    """The causal-LM options (window counts are per domain) and the specialists' recipe."""

    n_validation: int = Field(4, ge=1, le=512, description="validation windows per domain")
    n_test: int = Field(4, ge=0, le=512, description="test windows per domain")
    n_calibration: int = Field(16, ge=1, le=4096, description="windows of the calibration mix (both train splits)")
    n_prompts: int = Field(6, ge=0, le=256, description="prompts of generation fidelity, spread over the domains")
    seed: int = Field(0, ge=0, description="seed of the specialists' fine-tunes")
    specialist_steps: int = Field(12, ge=1, le=10000)
    specialist_batch: int = Field(4, ge=1, le=256)
    specialist_context: int = Field(64, ge=8, le=2048)
    specialist_lr: float = Field(3e-3, gt=0, le=1.0)
    specialist_rank: int = Field(8, ge=1, le=256)
    make_checkpoints: bool = Field(True, description="make missing specialists on first use (minutes on CPU)")
    merge_method: Literal["linear", "ties"] = "linear"
    ties_density: float = Field(1.0, gt=0.0, le=1.0, description="TIES: share of each task vector kept")


def recipes(opts: SmolLM2MergeOptions) -> list[Recipe]:
    """The recipe of each specialist, in checkpoint order (docs, code)."""
    return [Recipe(domain=d, steps=opts.specialist_steps, batch=opts.specialist_batch,
                   context=opts.specialist_context, lr=opts.specialist_lr, rank=opts.specialist_rank,
                   seed=opts.seed + i) for i, d in enumerate(SPECIALIST_DOMAINS)]


class SmolLM2MergeTask(Task):
    """SmolLM2's docs and code specialists merged per block, then compressed.

    Args:
        options: the task's options.
        base: a causal-LM folder standing in for SmolLM2 (tests: a tiny random Llama).
        specialists: folders of ready specialists of ``base`` (tests); else made by recipe.
    """

    name = "smollm2-merge"
    summary = ("per-block merge of docs and code specialists of SmolLM2-135M-Instruct (LoRA fine-tunes made "
               "here), with bits, KV bits and pruning; perplexity per domain and on general text")
    extra = "llm"
    requires = SmolLM2Task.requires
    Options = SmolLM2MergeOptions
    metrics = domain_metrics(ALL_DOMAINS)

    def __init__(self, options: SmolLM2MergeOptions | None = None, base: str | Path | None = None,
                 specialists: list[Path] | None = None) -> None:
        super().__init__(options)
        self.base = Path(base) if base is not None else None
        self.specialists = specialists

    def base_folder(self) -> Path:
        return self.base if self.base is not None else SmolLM2Task().model_path()

    def specialist_folders(self) -> list[Path]:
        opts: SmolLM2MergeOptions = self.options  # type: ignore[assignment]
        if self.specialists is not None:
            return list(self.specialists)
        return specialist_folders(self.base_folder(), recipes(opts), make=opts.make_checkpoints)

    def load(self, device: torch.device) -> ModelBundle:
        opts: SmolLM2MergeOptions = self.options  # type: ignore[assignment]
        offline_transformers(self.name, INSTALL_HINT)
        folder = self.base_folder()
        model, tokenizer = load_causal_lm(folder, device)
        checkpoints = []
        for path in self.specialist_folders():
            specialist, _ = load_causal_lm(path, torch.device("cpu"))
            checkpoints.append({k: v.to(device) for k, v in specialist.state_dict().items()})
            del specialist

        def split(name: DomainSplit, count: int) -> Split:
            windows = {d: token_windows(tokenizer, domain_texts(d, name), opts.context, count).to(device)
                       for d in ALL_DOMAINS}
            return Split(tagged_batches(windows, opts.batch_size), size=sum(len(w) for w in windows.values()),
                         description=f"{name} windows of {opts.context} tokens, {count} per domain")

        half = -(-opts.n_calibration // len(SPECIALIST_DOMAINS))
        mixed = {d: token_windows(tokenizer, domain_texts(d, "train"), opts.context, half).to(device)
                 for d in SPECIALIST_DOMAINS}
        mix = torch.cat(list(mixed.values()))
        mix = mix[torch.randperm(len(mix), generator=torch.Generator().manual_seed(opts.seed)).to(device)]
        batch, context = serving_shape(opts, device)
        example = ExampleInputs((), {"input_ids": torch.ones(batch, 1, dtype=torch.long, device=device)})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return ModelBundle(
            model=model, example=example,
            validation=split("validation", opts.n_validation),
            calibration=Split(tagged_batches(mixed, opts.batch_size), size=len(mix),
                              description="calibration mix of the docs and code train splits"),
            test=split("test", opts.n_test) if opts.n_test else None,
            scorer=DomainLMScorer(opts, device, pad, ALL_DOMAINS),
            links=causal_lm_links(model),
            info={"model_folder": str(folder), "serving_batch": batch, "serving_context": context},
            checkpoints=checkpoints,
            merge=MergeSettings(opts.merge_method, opts.ties_density),
            finetune=FinetuneData(mix, mix, causal_lm_loss),
        )

    def compress(self, model: nn.Module, config: TrialConfig) -> nn.Module:
        """The trial's KV-cache formats, attached to its merged, compressed model."""
        return kv_model.attach_kv_formats(model, config.kv_bits) if config.kv_bits else model


__all__ = ["DISTRIBUTION", "SmolLM2MergeOptions", "SmolLM2MergeTask", "recipes"]
