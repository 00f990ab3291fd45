"""What the pretrained sentence-encoder tasks (``minilm``, ``mpnet``) share.

A task of this kind is a Hugging Face encoder behind sentence-transformers' recipe (mean
pooling over real tokens, L2 normalisation), loaded offline from a local folder and scored
against its own uncompressed embeddings: ``fidelity`` (mean cosine) and ``recall@10``
(overlap of each sentence's ten nearest neighbours). Text: sentences from the docstrings of
Python's standard library, committed in ``data/sentences.txt``; calibration, validation
and test are disjoint slices.

Every split is tokenized once, when the task loads, into batches of like token lengths kept
on the task's device: scoring a trial is model work only.

A subclass says where its model comes from (:meth:`SentenceEncoderTask.load_encoder`) and
which of its layers structured pruning may shrink (:meth:`SentenceEncoderTask.links`).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from paretoml.objectives.tasks.base import (
    ExampleInputs,
    MissingExtraError,
    ModelBundle,
    ObjectiveDef,
    Scorer,
    Split,
    Task,
    TaskOptions,
)
from paretoml.search_space.introspect import ChannelLink

SENTENCE_METRICS: tuple[ObjectiveDef, ...] = (
    ObjectiveDef("fidelity", "maximize", "measured",
                 "mean cosine of the sentence embeddings to the uncompressed model's"),
    ObjectiveDef("recall_at_10", "maximize", "measured",
                 "share of each sentence's 10 nearest neighbours (cosine) that the uncompressed model also finds"),
)
Batch = dict[str, torch.Tensor]


def load_sentences() -> list[str]:
    text = resources.files("paretoml.objectives.tasks").joinpath("data/sentences.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


def folder_override(variable: str) -> Path | None:
    """The Hugging Face folder named by the environment variable ``variable``, if set.

    Read in the process that loads the task (server, Ray worker), never from a spec: an API
    client must not choose paths on the server.
    """
    value = os.environ.get(variable)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{variable}={value!r} is not a Hugging Face model folder (no config.json)")
    return folder


def offline_transformers(task: str, install_hint: str) -> ModuleType:
    """``transformers``, imported with the hub switched off (nothing is ever downloaded)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise MissingExtraError(f"task {task!r} needs the optional extra: {install_hint}") from None
    hf_logging.set_verbosity_error()  # a checkpoint's unused pooler weights are expected
    hf_logging.disable_progress_bar()  # one bar per worker load, on a server's log
    return transformers


class SentenceEncoder(nn.Module):
    """Encoder + mean pooling over real tokens + L2 normalisation (sentence-transformers'
    recipe): ``(input_ids, attention_mask) -> (batch, hidden)`` unit vectors. The encoder is
    registered under ``name`` (``bert``, ``mpnet``), the prefix of its layer names."""

    def __init__(self, encoder: nn.Module, name: str = "bert") -> None:
        super().__init__()
        self.encoder_name = name
        self.add_module(name, encoder)

    @property
    def backbone(self) -> nn.Module:
        return self.get_submodule(self.encoder_name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


@dataclass
class LoadedEncoder:
    model: SentenceEncoder
    tokenizer: Any
    folder: Path


def encode(tokenizer: Any, texts: Sequence[str], max_length: int, device: torch.device) -> Batch:
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}


def tokenized_split(tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_size: int,
                    device: torch.device, description: str) -> Split:
    """The split's batches, tokenized now and kept on ``device``: sentences ordered by token
    count (stable), so each batch pads to a length close to its own sentences'."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    ordered = [texts[i] for i in sorted(range(len(texts)), key=lengths.__getitem__)]
    batches = [encode(tokenizer, ordered[i : i + batch_size], max_length, device)
               for i in range(0, len(ordered), batch_size)]
    return Split(batches, size=len(ordered), description=description)


class EmbeddingScorer(Scorer):
    """Fidelity and neighbour recall of sentence embeddings against the uncompressed model's."""

    metrics = SENTENCE_METRICS

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


class SentenceEncoderOptions(TaskOptions):
    n_calibration: int = Field(64, ge=8, le=1000, description="sentences for cheap passes (sensitivity)")
    n_validation: int = Field(256, ge=16, le=1000, description="sentences every trial is scored on")
    n_test: int = Field(512, ge=0, le=1000, description="held-out sentences")
    max_length: int = Field(64, ge=8, le=256, description="tokens per sentence, longer ones truncated")
    batch_size: int = Field(64, ge=1, le=1024, description="sentences per evaluation batch")
    latency_batch: int = Field(8, ge=1, le=256, description="sentences of the latency / memory example")


class SentenceEncoderTask(Task):
    """A pretrained sentence encoder scored by the fidelity of its embeddings."""

    Options = SentenceEncoderOptions
    metrics = SENTENCE_METRICS

    @abstractmethod
    def load_encoder(self, device: torch.device) -> LoadedEncoder:
        """The fp32 model (eval mode, on ``device``) and its tokenizer, loaded offline."""

    @abstractmethod
    def links(self, model: SentenceEncoder) -> dict[str, ChannelLink]:
        """Channel links of the layers structured pruning may shrink (heads, FFN neurons)."""

    def load(self, device: torch.device) -> ModelBundle:
        opts: SentenceEncoderOptions = self.options  # type: ignore[assignment]
        loaded = self.load_encoder(device)
        sentences = load_sentences()
        a, b = opts.n_calibration, opts.n_calibration + opts.n_validation
        if b + opts.n_test > len(sentences):
            raise ValueError(f"the splits ask for {b + opts.n_test} sentences; {len(sentences)} ship")
        parts = {"calibration": sentences[:a], "validation": sentences[a:b], "test": sentences[b : b + opts.n_test]}

        def split(name: str) -> Split:
            return tokenized_split(loaded.tokenizer, parts[name], max_length=opts.max_length,
                                   batch_size=opts.batch_size, device=device, description=name)

        example = encode(loaded.tokenizer, parts["validation"][: opts.latency_batch], opts.max_length, device)
        return ModelBundle(
            model=loaded.model,
            example=ExampleInputs((), example),
            validation=split("validation"),
            calibration=split("calibration"),
            test=split("test") if opts.n_test else None,
            scorer=EmbeddingScorer(),
            links=self.links(loaded.model),
            info={"model_folder": str(loaded.folder), "sentences": len(sentences)},
        )
