"""How much each KV group, FFN channel and layer of a decoder matters, measured on text.

Scores are higher for what matters more; :func:`keep_top` turns them into a uniform
:class:`~pruning.methods.decoder.DecoderPlan` entry. Criteria:

- KV groups: ``ablation`` (remove the group alone, measure the KL divergence of the
  next-token distributions from the dense model's), ``taylor`` (first-order estimate of the
  LM loss change when the group's gate goes 1 → 0, |∂loss/∂gate| summed over batches), ``l2``
  (weight magnitude of the group: what Torch-Pruning's LLM example uses, for comparison).
- FFN channels: ``activation`` (mean |activation| × ‖down column‖, as Wanda scores weights),
  ``taylor`` (|activation × ∂loss/∂activation| summed over tokens).
- Layers: Block Influence (ShortGPT): 1 − cosine between a block's input and output hidden
  states, averaged over tokens.

A batch is ``(input_ids, attention_mask)``; padded positions never count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pruneguard.pruning.methods.decoder import (
    CausalLM,
    decoder_layers,
    gated,
    group_channels,
    shape_of,
)

__all__ = [
    "FFN_CRITERIA",
    "KV_CRITERIA",
    "Batch",
    "block_influence",
    "ffn_scores",
    "gate_groups",
    "keep_top",
    "kv_group_scores",
    "lm_loss",
    "logits_of",
    "lowest",
    "next_token_kl",
]

KV_CRITERIA = ("ablation", "taylor", "l2")
FFN_CRITERIA = ("activation", "taylor")
Batch = tuple[Tensor, Tensor]  # input_ids, attention_mask


def lm_loss(logits: Tensor, batch: Batch) -> Tensor:
    """Mean next-token cross-entropy over the real (unpadded) positions."""
    ids, mask = batch
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


def next_token_kl(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean KL(teacher ‖ student) of the next-token distributions at the real positions."""
    log_s = student.log_softmax(-1)
    log_t = teacher.log_softmax(-1)
    per_token = (log_t.exp() * (log_t - log_s)).sum(-1)
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def logits_of(model: CausalLM, batch: Batch) -> Tensor:
    """Next-token logits of a batch, without building a KV cache."""
    ids, mask = batch
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


@contextmanager
def gate_groups(model: CausalLM, gates: Tensor) -> Iterator[None]:
    """Scale each KV group's query-head outputs by ``gates [layers, kv_heads]`` (a pre-hook
    on ``o_proj``); a gate of 0 gives the same answers as removing the group."""
    shape = shape_of(model)
    width = shape.queries_per_group * shape.head_dim
    handles = []
    for layer, layer_gates in zip(decoder_layers(model), gates, strict=True):

        def hook(_module: nn.Module, args: tuple[Tensor, ...], g: Tensor = layer_gates) -> tuple:
            return (gated(args[0], g, width), *args[1:])

        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def kv_group_scores(model: CausalLM, batches: Sequence[Batch], criterion: str) -> Tensor:
    """``[layers, kv_heads]``: how much each KV group matters (higher: keep)."""
    scorers: dict[str, Callable[[nn.Module, Sequence[Batch]], Tensor]] = {
        "ablation": _ablation,
        "taylor": _taylor,
        "l2": _magnitude,
    }
    if criterion not in scorers:
        raise ValueError(f"criterion {criterion!r} for KV groups; allowed: {', '.join(scorers)}")
    return scorers[criterion](model, batches)


@torch.no_grad()
def _ablation(model: CausalLM, batches: Sequence[Batch]) -> Tensor:
    shape = shape_of(model)
    dense = [logits_of(model, b) for b in batches]
    scores = torch.zeros(shape.layers, shape.kv_heads)
    for layer in range(shape.layers):
        for group in range(shape.kv_heads):
            gates = torch.ones(shape.layers, shape.kv_heads)
            gates[layer, group] = 0.0
            with gate_groups(model, gates):
                kl = [
                    next_token_kl(logits_of(model, b), t, b[1])
                    for b, t in zip(batches, dense, strict=True)
                ]
            scores[layer, group] = torch.stack(kl).mean()
    return scores


def _taylor(model: CausalLM, batches: Sequence[Batch]) -> Tensor:
    shape = shape_of(model)
    gates = torch.ones(shape.layers, shape.kv_heads, requires_grad=True)
    scores = torch.zeros(shape.layers, shape.kv_heads)
    for batch in batches:
        with gate_groups(model, gates):
            loss = lm_loss(logits_of(model, batch), batch)
        (grad,) = torch.autograd.grad(loss, gates)
        scores += grad.abs()
    return scores


@torch.no_grad()
def _magnitude(model: CausalLM, _batches: Sequence[Batch]) -> Tensor:
    shape = shape_of(model)
    scores = torch.zeros(shape.layers, shape.kv_heads)
    for layer_index, layer in enumerate(decoder_layers(model)):
        attn = layer.self_attn
        for group in range(shape.kv_heads):
            q_rows, kv_rows = group_channels(shape, [group])
            parts = (
                attn.q_proj.weight[q_rows],
                attn.k_proj.weight[kv_rows],
                attn.v_proj.weight[kv_rows],
                attn.o_proj.weight[:, q_rows],
            )
            scores[layer_index, group] = torch.stack([p.pow(2).sum() for p in parts]).sum().sqrt()
    return scores


def ffn_scores(model: CausalLM, batches: Sequence[Batch], criterion: str) -> Tensor:
    """``[layers, ffn]``: how much each FFN channel matters (higher: keep)."""
    if criterion not in FFN_CRITERIA:
        raise ValueError(f"criterion {criterion!r} for FFN; allowed: {', '.join(FFN_CRITERIA)}")
    shape = shape_of(model)
    layers = decoder_layers(model)
    totals = torch.zeros(shape.layers, shape.ffn)
    captured: list[Tensor] = []

    def capture(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if criterion == "taylor":
            args[0].retain_grad()
        captured.append(args[0])

    handles = [layer.mlp.down_proj.register_forward_pre_hook(capture) for layer in layers]
    tokens = 0.0
    try:
        for batch in batches:
            captured.clear()
            with torch.set_grad_enabled(criterion == "taylor"):
                logits = logits_of(model, batch)
                if criterion == "taylor":
                    lm_loss(logits, batch).backward()
            real = batch[1].unsqueeze(-1).to(torch.float32)
            for index, act in enumerate(captured):
                if criterion == "taylor":
                    assert act.grad is not None
                    act = act * act.grad
                totals[index] += (act.abs() * real).sum((0, 1)).detach()
            tokens += float(real.sum())
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    if criterion == "activation":
        columns = torch.stack([layer.mlp.down_proj.weight.detach().norm(dim=0) for layer in layers])
        return totals / max(tokens, 1.0) * columns
    return totals


@torch.no_grad()
def block_influence(model: CausalLM, batches: Sequence[Batch]) -> Tensor:
    """``[layers]``: 1 − mean cosine(block input, block output) over real tokens."""
    layers = decoder_layers(model)
    totals = torch.zeros(len(layers))
    pairs: list[tuple[Tensor, Tensor]] = []

    def capture(_module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        hidden_in = args[0] if args else kwargs["hidden_states"]
        hidden_out = output[0] if isinstance(output, tuple) else output
        assert isinstance(hidden_out, Tensor)
        pairs.append((hidden_in, hidden_out))

    handles = [layer.register_forward_hook(capture, with_kwargs=True) for layer in layers]
    tokens = 0.0
    try:
        for batch in batches:
            pairs.clear()
            logits_of(model, batch)
            weight = batch[1].to(torch.float32)
            for index, (hidden_in, hidden_out) in enumerate(pairs):
                cosine = nn.functional.cosine_similarity(hidden_in, hidden_out, dim=-1)
                totals[index] += ((1.0 - cosine) * weight).sum()
            tokens += float(weight.sum())
    finally:
        for handle in handles:
            handle.remove()
    return totals / max(tokens, 1.0)


def keep_top(scores: Tensor, keep: int) -> tuple[tuple[int, ...], ...]:
    """Per layer (row), the ``keep`` highest-scoring indices, in ascending order."""
    if not 0 < keep <= scores.shape[1]:
        raise ValueError(f"keep {keep} of {scores.shape[1]} per layer: keep at least one")
    top = scores.topk(keep, dim=1).indices.sort(dim=1).values
    return tuple(tuple(int(i) for i in row) for row in top)


def lowest(scores: Tensor, count: int) -> tuple[int, ...]:
    """The ``count`` lowest-scoring layers, ascending."""
    return tuple(sorted(int(i) for i in scores.argsort()[:count]))
