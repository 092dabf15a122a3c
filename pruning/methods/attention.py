"""A self-attention module whose heads can be removed, and conversion to it.

``nn.MultiheadAttention`` keeps one packed ``in_proj_weight`` and derives the head size from
``embed_dim / num_heads``, so it cannot hold fewer heads than its embedding width implies.
:class:`PrunableSelfAttention` keeps separate q/k/v projections of ``num_heads × head_dim``
rows and an output projection of as many columns; removing a head removes its rows and
columns and lowers ``num_heads``. :func:`convert_attention` swaps every
``nn.TransformerEncoderLayer`` (and any other ``nn.MultiheadAttention``, used as
self-attention) in a model for these modules, in place, with identical outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneguard.registry.errors import ConfigError

__all__ = ["PrunableEncoderLayer", "PrunableSelfAttention", "convert_attention"]


class PrunableSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (heads can be removed).

    Call-compatible with ``nn.MultiheadAttention`` used as self-attention: returns
    ``(output, None)``; ``key``/``value`` must be the query itself (or omitted).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        *,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if embed_dim % num_heads:
                raise ConfigError(
                    f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; "
                    "pass head_dim explicitly"
                )
            head_dim = embed_dim // num_heads
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.batch_first = batch_first
        self.dropout = dropout
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> PrunableSelfAttention:
        """The same attention, with the packed ``in_proj`` split into q/k/v (weights copied)."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ConfigError(
                "nn.MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn cannot be "
                "converted; build the model with plain self-attention (defaults for those options)"
            )
        bias = mha.in_proj_bias is not None
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            bias=bias,
            batch_first=mha.batch_first,
            dropout=mha.dropout,
        )
        w = mha.in_proj_weight.detach()
        e = mha.embed_dim
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(w[i * e : (i + 1) * e])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias.detach()[i * e : (i + 1) * e])
            new.out_proj.weight.copy_(mha.out_proj.weight.detach())
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias.detach())
        return new.to(device=w.device, dtype=w.dtype)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, None]:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ConfigError(
                "PrunableSelfAttention is self-attention only: pass key and value as the query"
            )
        x = query if self.batch_first else query.transpose(0, 1)
        b, t, _ = x.shape
        q, k, v = (
            p(x).view(b, t, -1, self.head_dim).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        mask = _additive_mask(attn_mask, key_padding_mask, x.dtype, b, t, is_causal)
        drop = self.dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        out = self.out_proj(ctx.transpose(1, 2).reshape(b, t, -1))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    dtype: torch.dtype,
    b: int,
    t: int,
    is_causal: bool,
) -> Tensor | None:
    """One float mask of shape (b, 1, t, t) or (1, 1, t, t) to add to the scores."""
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    mask: Tensor | None = None
    if attn_mask is not None:
        if attn_mask.dim() != 2:
            raise ConfigError(
                f"attn_mask of shape {tuple(attn_mask.shape)}: only a (seq, seq) mask is supported "
                "(a per-head mask cannot follow removed heads)"
            )
        mask = _as_float(attn_mask, dtype).view(1, 1, t, t)
    if key_padding_mask is not None:
        pad = _as_float(key_padding_mask, dtype).view(b, 1, 1, t)
        mask = pad if mask is None else mask + pad
    return mask


def _as_float(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


class PrunableEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer``'s computation around a :class:`PrunableSelfAttention`.

    Built from an existing layer by :meth:`from_encoder_layer` (it shares nothing with it:
    the feed-forward and norm modules are deep copies).
    """

    def __init__(
        self,
        self_attn: PrunableSelfAttention,
        linear1: nn.Linear,
        linear2: nn.Linear,
        norm1: nn.Module,
        norm2: nn.Module,
        activation: Callable[[Tensor], Tensor],
        *,
        norm_first: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.linear1, self.linear2 = linear1, linear2
        self.norm1, self.norm2 = norm1, norm2
        self.activation = activation
        self.norm_first = norm_first
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    @classmethod
    def from_encoder_layer(cls, layer: nn.TransformerEncoderLayer) -> PrunableEncoderLayer:
        return cls(
            PrunableSelfAttention.from_multihead(layer.self_attn),
            copy.deepcopy(layer.linear1),
            copy.deepcopy(layer.linear2),
            copy.deepcopy(layer.norm1),
            copy.deepcopy(layer.norm2),
            copy.deepcopy(layer.activation),
            norm_first=layer.norm_first,
            dropout=float(layer.dropout.p),
        )

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(
        self, x: Tensor, mask: Tensor | None, padding: Tensor | None, is_causal: bool
    ) -> Tensor:
        out = self.self_attn(x, attn_mask=mask, key_padding_mask=padding, is_causal=is_causal)[0]
        return self.dropout1(out)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def convert_attention(model: nn.Module) -> int:
    """Replace, in place, every ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention``.

    Returns how many modules were replaced. Outputs are unchanged (to float rounding); a
    stand-alone ``nn.MultiheadAttention`` must be used as self-attention.
    """
    replaced = 0
    for name, child in list(model.named_children()):
        new: nn.Module | None = None
        if isinstance(child, nn.TransformerEncoderLayer):
            new = PrunableEncoderLayer.from_encoder_layer(child)
        elif isinstance(child, nn.MultiheadAttention):
            new = PrunableSelfAttention.from_multihead(child)
        if new is None:
            replaced += convert_attention(child)
            continue
        new.train(child.training)
        setattr(model, name, new)
        replaced += 1
    return replaced
