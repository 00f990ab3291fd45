"""MPNet's self-attention, made prunable by whole heads (imported only with ``transformers``).

MPNet adds one relative position bias to the attention scores of every block, computed once
by the encoder for all heads. This attention keeps the indices of its own heads (the buffer
``heads``, which structured pruning shrinks with the kept heads) and reads the bias at those.
The buffer is persistent: an export must say which heads a pruned block kept, since its
shapes say only how many (the reload of a head-pruned block read the bias at the wrong heads
when it was not). Its head count is read from the tensors, not from the module's attributes,
which a model rebuilt from an export's shapes does not carry.
It computes the same function as transformers' ``MPNetSelfAttention`` through
``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


class HeadSelectingMPNetSelfAttention(MPNetSelfAttention):
    heads: torch.Tensor

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_bias: torch.Tensor | None = None, output_attentions: bool = False,
                **kwargs: Any) -> tuple[torch.Tensor | None, ...]:
        batch, length, _ = hidden_states.shape
        shape = (batch, length, -1, self.attention_head_size)
        q, k, v = (p(hidden_states).view(shape).transpose(1, 2) for p in (self.q, self.k, self.v))
        bias = None
        if position_bias is not None:
            bias = position_bias if position_bias.shape[1] == len(self.heads) else position_bias[:, self.heads]
        if attention_mask is not None:
            mask = _additive(attention_mask, q.dtype)
            bias = mask if bias is None else bias + mask
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.dropout.p if self.training else 0.0)
        o = self.o(context.transpose(1, 2).reshape(batch, length, -1))
        return (o, None) if output_attentions else (o,)


def enable_head_pruning(mpnet: nn.Module) -> nn.Module:
    """Turn every block's self-attention of an ``MPNetModel`` into the head-selecting one (in
    place: parameters and module names are unchanged)."""
    for layer in mpnet.encoder.layer:
        attn = layer.attention.attn
        if not isinstance(attn, MPNetSelfAttention):
            raise TypeError(f"not an MPNet self-attention: {type(attn).__name__}")
        attn.__class__ = HeadSelectingMPNetSelfAttention
        attn.register_buffer("heads", torch.arange(attn.num_attention_heads, device=attn.q.weight.device))
    return mpnet
