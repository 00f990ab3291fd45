"""A tiny random Llama (grouped-query attention, tied embeddings) saved as a causal-LM folder,
with a small BPE tokenizer trained here on Python's help topics: no download, seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from paretoml.objectives.tasks.lm_text import pydoc_topics


def tokenizer_for_tests(vocab: int = 384):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(pydoc_topics()[:20], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_llama_folder(root: Path, seed: int = 0, layers: int = 2) -> Path:
    """A folder holding a random 2-layer Llama: 4 query heads in 2 KV groups, head dim 16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer_for_tests()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init's, so compression shows in the metrics
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.12)
    folder = root / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
