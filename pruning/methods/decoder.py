"""Structural pruning of decoder LLMs (Llama/Qwen family, grouped-query attention).

Every cut is uniform across layers (the same number of KV groups, FFN channels kept in each
layer; which ones may differ per layer), so the result is still one transformers config and
reloads with ``from_pretrained``. Deciding is separate from doing: a :class:`DecoderPlan`
(pure data, chosen by :mod:`.decoder_scores`) names what stays; :func:`apply_plan` cuts the
model to it.

- **KV groups**: one key/value head and the query heads that share it. Removing a group drops
  its k/v rows, its query heads' q rows and the matching ``o_proj`` columns, so the KV cache
  shrinks by the same share (the point of head pruning for decoders).
- **FFN width**: channels of the gated MLP (rows of gate/up, columns of down).
- **Layers**: whole decoder blocks; the kept ones are renumbered so the KV cache indexes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

# a transformers AutoModelForCausalLM (typed loosely: its config and submodules are dynamic)
CausalLM = Any

__all__ = [
    "CausalLM",
    "DecoderPlan",
    "DecoderShape",
    "apply_plan",
    "decoder_layers",
    "drop_layers",
    "gated",
    "group_channels",
    "params",
    "remove_kv_groups",
    "shape_of",
    "shrink_ffn",
]


@dataclass(frozen=True)
class DecoderShape:
    """The sizes that pruning changes, read from a model's config."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    hidden: int

    @property
    def queries_per_group(self) -> int:
        return self.heads // self.kv_heads

    def kv_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        """Bytes the KV cache holds per token of context (keys and values, every layer)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "ffn": self.ffn,
            "hidden": self.hidden,
        }


@dataclass(frozen=True)
class DecoderPlan:
    """What stays, per layer of the model as it is now (None: that dimension is not cut)."""

    kv_groups: tuple[tuple[int, ...], ...] | None = None  # kept KV groups, per layer
    ffn: tuple[tuple[int, ...], ...] | None = None  # kept FFN channels, per layer
    drop: tuple[int, ...] = ()  # layers removed (indices before any removal)


def decoder_layers(model: CausalLM) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of a causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(
            f"{type(model).__name__} has no model.layers; decoder pruning supports Llama/Qwen-"
            "family causal LMs (transformers AutoModelForCausalLM with q/k/v/o and gate/up/down)"
        )
    return layers


def shape_of(model: CausalLM) -> DecoderShape:
    config = model.config
    heads = int(config.num_attention_heads)
    return DecoderShape(
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        ffn=int(config.intermediate_size),
        hidden=int(config.hidden_size),
    )


def group_channels(shape: DecoderShape, groups: Sequence[int]) -> tuple[list[int], list[int]]:
    """Rows of q_proj and of k_proj/v_proj that belong to ``groups`` (in order)."""
    q_rows: list[int] = []
    kv_rows: list[int] = []
    per_group = shape.queries_per_group * shape.head_dim
    for g in groups:
        q_rows.extend(range(g * per_group, (g + 1) * per_group))
        kv_rows.extend(range(g * shape.head_dim, (g + 1) * shape.head_dim))
    return q_rows, kv_rows


def _uniform(kept: Sequence[Sequence[int]], limit: int, what: str, layers: int) -> int:
    if len(kept) != layers:
        raise ValueError(f"{what}: a plan for {len(kept)} layers, the model has {layers}")
    counts = {len(k) for k in kept}
    if len(counts) != 1:
        raise ValueError(f"{what}: keep the same number in every layer (got {sorted(counts)})")
    count = counts.pop()
    if not 0 < count <= limit or any(not 0 <= i < limit for k in kept for i in k):
        raise ValueError(f"{what}: keep between 1 and {limit}, each index in 0..{limit - 1}")
    return count


def _select(linear: nn.Linear, index: list[int], dim: int) -> nn.Linear:
    """A new Linear holding only ``index`` along ``dim`` (0: outputs, 1: inputs)."""
    import torch
    from torch import nn

    at = torch.tensor(index, dtype=torch.long, device=linear.weight.device)
    weight: torch.Tensor = linear.weight.detach().index_select(dim, at).clone()
    bias: torch.Tensor | None = None if linear.bias is None else linear.bias.detach()
    if bias is not None and dim == 0:
        bias = bias.index_select(0, at)
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            assert new.bias is not None
            new.bias.copy_(bias)
    return new


def remove_kv_groups(model: CausalLM, kept: Sequence[Sequence[int]]) -> None:
    """Keep only the KV groups ``kept[layer]`` (same count in every layer)."""
    shape = shape_of(model)
    count = _uniform(kept, shape.kv_heads, "kv_groups", shape.layers)
    for layer, groups in zip(decoder_layers(model), kept, strict=True):
        attn = layer.self_attn
        q_rows, kv_rows = group_channels(shape, sorted(groups))
        attn.q_proj = _select(attn.q_proj, q_rows, 0)
        attn.k_proj = _select(attn.k_proj, kv_rows, 0)
        attn.v_proj = _select(attn.v_proj, kv_rows, 0)
        attn.o_proj = _select(attn.o_proj, q_rows, 1)
    config = model.config
    config.num_key_value_heads = count
    config.num_attention_heads = count * shape.queries_per_group
    # explicit: derived from hidden / heads it would change, and the folder would not load
    config.head_dim = shape.head_dim


def shrink_ffn(model: CausalLM, kept: Sequence[Sequence[int]]) -> None:
    """Keep only the FFN channels ``kept[layer]`` (same count in every layer)."""
    shape = shape_of(model)
    count = _uniform(kept, shape.ffn, "ffn", shape.layers)
    for layer, channels in zip(decoder_layers(model), kept, strict=True):
        mlp, index = layer.mlp, sorted(channels)
        mlp.gate_proj = _select(mlp.gate_proj, index, 0)
        mlp.up_proj = _select(mlp.up_proj, index, 0)
        mlp.down_proj = _select(mlp.down_proj, index, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = count
    model.config.intermediate_size = count


def drop_layers(model: CausalLM, drop: Sequence[int]) -> None:
    """Remove the decoder blocks ``drop``; renumber the rest for the KV cache."""
    from torch import nn

    layers = decoder_layers(model)
    total = len(layers)
    if any(not 0 <= i < total for i in drop) or len(set(drop)) >= total:
        raise ValueError(f"drop: indices in 0..{total - 1}, at least one layer left")
    keep = [i for i in range(total) if i not in set(drop)]
    blocks: list[Any] = [layers[i] for i in keep]
    for new_index, layer in enumerate(blocks):
        layer.self_attn.layer_idx = new_index
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    model.model.layers = nn.ModuleList(blocks)
    config = model.config
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        config.layer_types = [layer_types[i] for i in keep]


def apply_plan(model: CausalLM, plan: DecoderPlan) -> CausalLM:
    """Cut ``model`` (in place) to ``plan``: groups and FFN first, then whole layers."""
    if plan.kv_groups is not None:
        remove_kv_groups(model, plan.kv_groups)
    if plan.ffn is not None:
        shrink_ffn(model, plan.ffn)
    if plan.drop:
        drop_layers(model, plan.drop)
    return model


def params(model: CausalLM) -> int:
    """Parameters, counting tied embeddings once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def gated(tensor: torch.Tensor, gates: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor [..., groups*width]`` scaled by ``gates [groups]`` per block of ``width``."""
    shape = tensor.shape
    return (tensor.view(*shape[:-1], -1, width) * gates.view(-1, 1)).view(shape)
