"""Attention-head pruning: find heads, score them, choose the weakest, remove them physically.

Two kinds of attention module are understood:

- :class:`pruning.methods.attention.PrunableSelfAttention` (what :func:`convert_attention` makes of
  ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``);
- BERT-family attention from transformers 5 (``attention.self.{query,key,value}`` and
  ``attention.output.dense``: BERT, RoBERTa, MiniLM), which no longer has ``prune_heads``;
- DistilBERT's (``attention.{q,k,v,out}_lin``).

Heads are *gated* by a forward pre-hook on the output projection, whose input is the
concatenation of the heads' context vectors: multiplying head ``h``'s slice by ``g_h`` is the
mask of Michel et al. (2019). Removing a head deletes its q/k/v rows and its output-projection
columns and lowers the module's head count; a removed head and a gate of 0 give the same
outputs.

Deciding is separate from doing: :func:`score_heads` and :func:`plan_removal` are pure,
:func:`remove_heads` applies a plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneguard.pruning.methods.attention import PrunableSelfAttention, convert_attention
from pruneguard.registry.errors import ConfigError

__all__ = [
    "HEAD_CRITERIA",
    "HeadPruner",
    "HeadSite",
    "HeadsExhausted",
    "NoAttention",
    "attention_memory",
    "find_heads",
    "gate_heads",
    "plan_removal",
    "removal_counts",
    "remove_heads",
    "score_heads",
]

HEAD_CRITERIA = ("gradient", "taylor", "ablation", "activation", "magnitude", "l1", "l2", "random")

Batch = Any
Forward = Callable[[nn.Module, Batch], Tensor]
Loss = Callable[[Tensor, Batch], Tensor]


class NoAttention(ConfigError):
    """The model has no attention module that head or layer pruning understands."""


class HeadsExhausted(ConfigError):
    """The head target would leave a layer with no heads."""


@dataclass(frozen=True)
class HeadSite:
    """One attention module: where its projections live and how to update its head count."""

    name: str
    module: nn.Module
    head_dim: int
    kind: str  # "prunable" | "bert" (also RoBERTa) | "distilbert"

    def projections(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        m: Any = self.module
        if self.kind == "prunable":
            return m.q_proj, m.k_proj, m.v_proj
        if self.kind == "distilbert":
            return m.q_lin, m.k_lin, m.v_lin
        return m.self.query, m.self.key, m.self.value

    def output(self) -> nn.Linear:
        m: Any = self.module
        if self.kind == "distilbert":
            return m.out_lin
        return m.out_proj if self.kind == "prunable" else m.output.dense

    @property
    def num_heads(self) -> int:
        return self.projections()[0].out_features // self.head_dim

    def replace(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear) -> None:
        m: Any = self.module
        heads = q.out_features // self.head_dim
        if self.kind == "prunable":
            m.q_proj, m.k_proj, m.v_proj, m.out_proj = q, k, v, out
            m.num_heads = heads
            return
        if self.kind == "distilbert":  # its forward derives the head count from the shapes
            m.q_lin, m.k_lin, m.v_lin, m.out_lin = q, k, v, out
            m.n_heads = heads
            return
        m.self.query, m.self.key, m.self.value, m.output.dense = q, k, v, out
        m.self.num_attention_heads = heads
        m.self.all_head_size = heads * self.head_dim


def _is_bert_attention(module: nn.Module) -> bool:
    inner, out = getattr(module, "self", None), getattr(module, "output", None)
    return all(hasattr(inner, a) for a in ("query", "key", "value", "attention_head_size")) and (
        isinstance(getattr(out, "dense", None), nn.Linear)
    )


def _is_distilbert_attention(module: nn.Module) -> bool:
    names = ("q_lin", "k_lin", "v_lin", "out_lin")
    return all(isinstance(getattr(module, a, None), nn.Linear) for a in names) and hasattr(
        module, "attention_head_size"
    )


def find_heads(model: nn.Module) -> list[HeadSite]:
    """Every prunable attention module of ``model``, in module order.

    Raises :class:`NoAttention` when there is none, and when the model still holds
    ``nn.MultiheadAttention`` (convert it first with :func:`convert_attention`).
    """
    sites: list[HeadSite] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            raise NoAttention(
                f"{name or 'the model'} is an nn.MultiheadAttention, which cannot hold fewer heads; "
                "convert the model first with pruning.methods.attention.convert_attention(model)"
            )
        if isinstance(module, PrunableSelfAttention):
            sites.append(HeadSite(name, module, module.head_dim, "prunable"))
        elif _is_bert_attention(module):
            sites.append(HeadSite(name, module, int(module.self.attention_head_size), "bert"))
        elif _is_distilbert_attention(module):
            sites.append(HeadSite(name, module, int(module.attention_head_size), "distilbert"))
    if not sites:
        raise NoAttention(
            f"{type(model).__name__} has no attention heads to prune (no nn.MultiheadAttention, "
            "nn.TransformerEncoderLayer or BERT-style attention); use method channel instead"
        )
    return sites


# --- gating ----------------------------------------------------------------------------------


@contextmanager
def gate_heads(sites: Sequence[HeadSite], gates: Sequence[Tensor]) -> Iterator[None]:
    """Multiply each head's context vector by its gate while the context is open.

    ``gates[i]`` has shape ``(heads,)`` or ``(batch, heads)`` (a gate per sample).
    """
    handles = []
    for site, gate in zip(sites, gates, strict=True):
        handles.append(site.output().register_forward_pre_hook(_gate_hook(site.head_dim, gate)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _gate_hook(head_dim: int, gate: Tensor) -> Callable[[nn.Module, tuple[Tensor, ...]], Any]:
    def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = args[0]
        heads = x.shape[-1] // head_dim
        split = x.view(*x.shape[:-1], heads, head_dim)
        g = gate.view(-1, *([1] * (x.dim() - 2)), heads, 1) if gate.dim() == 2 else gate[:, None]
        return ((split * g).reshape(x.shape), *args[1:])

    return hook


# --- scoring ---------------------------------------------------------------------------------


def score_heads(
    model: nn.Module,
    sites: Sequence[HeadSite],
    criterion: str,
    batches: Iterable[Batch] = (),
    *,
    forward: Forward | None = None,
    loss: Loss | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """One importance score per head (higher = keep), as a list of tensors, one per site.

    - ``gradient``: Michel et al. — mean over batches of ``|∂loss/∂gate|`` at gate = 1 (needs
      ``loss``; a loss against the dense model itself has zero gradient there).
    - ``taylor``: first-order estimate of how far removing the head moves the output,
      ``Σ_samples ‖∂output/∂gate‖²`` (label-free; right for embedding models).
    - ``ablation``: remove each head alone and measure the loss increase (or, without ``loss``,
      the mean squared change of the output).
    - ``activation``: mean norm of the head's contribution through the output projection.
    - ``magnitude``/``l2``/``l1``: norm of the head's q/k/v rows and output columns.
    - ``random``: seeded noise (a control).
    """
    if criterion not in HEAD_CRITERIA:
        raise ConfigError(
            f"criterion={criterion!r} for heads: must be one of {', '.join(HEAD_CRITERIA)}"
        )
    fwd = forward or _default_forward
    if criterion in ("magnitude", "l2", "l1"):
        return [_weight_norm(s, 1 if criterion == "l1" else 2) for s in sites]
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(s.num_heads, generator=gen) for s in sites]
    data = list(batches)
    if not data:
        raise ConfigError(
            f"criterion {criterion!r} needs calibration batches; pass some, or use magnitude"
        )
    if criterion == "gradient" and loss is None:
        raise ConfigError(
            "criterion 'gradient' needs a loss on labels (Michel et al.); for a model without "
            "labels (an embedding model) use criterion taylor"
        )
    scorers: dict[str, Callable[..., list[Tensor]]] = {
        "gradient": _gradient,
        "taylor": _taylor,
        "ablation": _ablation,
    }
    scorer = scorers.get(criterion)
    with _eval_mode(model):
        if scorer is not None:
            return scorer(model, sites, data, fwd, loss, seed)
        return _activation(model, sites, data, fwd)


def _default_forward(model: nn.Module, batch: Batch) -> Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _weight_norm(site: HeadSite, p: int) -> Tensor:
    d = site.head_dim
    rows = torch.cat([w.weight.detach().view(site.num_heads, -1) for w in site.projections()], 1)
    cols = site.output().weight.detach().view(-1, site.num_heads, d).transpose(0, 1)
    return torch.cat([rows, cols.reshape(site.num_heads, -1)], 1).norm(p=p, dim=1)


def _ones(sites: Sequence[HeadSite], batch: int | None = None) -> list[Tensor]:
    shape = [(s.num_heads,) if batch is None else (batch, s.num_heads) for s in sites]
    return [torch.ones(sh, requires_grad=True) for sh in shape]


def _gradient(
    model: nn.Module, sites: Sequence[HeadSite], data: list[Batch], fwd: Forward, loss: Loss | None,
    _seed: int,
) -> list[Tensor]:  # fmt: skip
    assert loss is not None
    total = [torch.zeros(s.num_heads) for s in sites]
    for batch in data:
        gates = _ones(sites)
        with gate_heads(sites, gates):
            value = loss(fwd(model, batch), batch)
        grads = torch.autograd.grad(value, gates)
        for acc, g in zip(total, grads, strict=True):
            acc += g.abs()
    return [t / len(data) for t in total]


def _taylor(
    model: nn.Module, sites: Sequence[HeadSite], data: list[Batch], fwd: Forward, _loss: Loss | None,
    seed: int, probes: int = 4,
) -> list[Tensor]:  # fmt: skip
    # Σ_s ‖J_s‖² per head, with J_s = ∂out_s/∂gate_s, estimated by random projections:
    # E_r[(rᵀ J_s)²] = ‖J_s‖² for r ~ N(0, I). Per-sample gates keep samples apart.
    gen = torch.Generator().manual_seed(seed)
    total = [torch.zeros(s.num_heads) for s in sites]
    for batch in data:
        gates = _ones(sites, _batch_size(batch))
        with gate_heads(sites, gates):
            out = fwd(model, batch)
        for i in range(probes):
            r = torch.randn(out.shape, generator=gen)
            grads = torch.autograd.grad((out * r).sum(), gates, retain_graph=i < probes - 1)
            for acc, g in zip(total, grads, strict=True):
                acc += g.pow(2).sum(0) / probes
    return total


def _batch_size(batch: Batch) -> int:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if isinstance(x, Mapping):
        x = next(iter(x.values()))
    return int(x.shape[0])


def _ablation(
    model: nn.Module, sites: Sequence[HeadSite], data: list[Batch], fwd: Forward, loss: Loss | None,
    _seed: int,
) -> list[Tensor]:  # fmt: skip
    with torch.no_grad():
        dense = [fwd(model, b) for b in data]

        def damage(gates: list[Tensor]) -> float:
            with gate_heads(sites, gates):
                outs = [fwd(model, b) for b in data]
            if loss is not None:
                return sum(float(loss(o, b)) for o, b in zip(outs, data, strict=True))
            return sum(float((o - d).pow(2).mean()) for o, d in zip(outs, dense, strict=True))

        base = damage([torch.ones(s.num_heads) for s in sites]) if loss is not None else 0.0
        scores = []
        for i, site in enumerate(sites):
            row = torch.zeros(site.num_heads)
            for h in range(site.num_heads):
                gates = [torch.ones(s.num_heads) for s in sites]
                gates[i][h] = 0.0
                row[h] = damage(gates) - base
            scores.append(row)
    return scores


def _activation(
    model: nn.Module, sites: Sequence[HeadSite], data: list[Batch], fwd: Forward
) -> list[Tensor]:
    total = [torch.zeros(s.num_heads) for s in sites]

    def recorder(i: int, site: HeadSite) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach()
            ctx = x.reshape(-1, site.num_heads, site.head_dim)
            w = site.output().weight.detach().view(-1, site.num_heads, site.head_dim)
            contrib = torch.einsum("nhd,ehd->nhe", ctx, w)  # each head's share of the output
            total[i] += contrib.norm(dim=-1).mean(0)

        return hook

    handles = [s.output().register_forward_pre_hook(recorder(i, s)) for i, s in enumerate(sites)]
    try:
        with torch.no_grad():
            for batch in data:
                fwd(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return [t / len(data) for t in total]


# --- choosing --------------------------------------------------------------------------------


def removal_counts(
    head_counts: Sequence[int], fraction: float, scope: str, *, names: Sequence[str] = ()
) -> int | list[int]:
    """How many heads to remove: one number (``global``) or one per layer (``layer``).

    Raises :class:`HeadsExhausted` when the fraction would leave a layer with no heads.
    """
    if not 0 < fraction < 1:
        raise ConfigError(
            f"target.heads={fraction}: must be > 0 and < 1 (the fraction of heads to remove)"
        )
    if scope == "layer":
        counts = [round(fraction * h) for h in head_counts]
        for i, (n, h) in enumerate(zip(counts, head_counts, strict=True)):
            if n >= h:
                where = names[i] if names else f"#{i}"
                limit = (h - 0.5) / h
                raise HeadsExhausted(
                    f"target.heads={fraction} with scope layer removes {n} of {h} heads in layer "
                    f"{where}, leaving none; use target.heads < {limit:.3f} or scope global"
                )
        return counts
    if scope != "global":
        raise ConfigError(f"scope={scope!r}: must be global or layer")
    total, layers = sum(head_counts), len(head_counts)
    n = round(fraction * total)
    if n > total - layers:
        limit = (total - layers) / total
        raise HeadsExhausted(
            f"target.heads={fraction} removes {n} of {total} heads, which would leave a layer "
            f"with no heads ({layers} layers keep at least one each); use target.heads <= "
            f"{limit:.3f}, or drop whole layers with method layer"
        )
    return n


def plan_removal(scores: Sequence[Tensor], counts: int | Sequence[int]) -> list[list[int]]:
    """Which heads to remove from each site: the lowest-scored ones.

    ``counts`` is a global number (ranked across all layers, never emptying a layer: each
    layer's best head is protected) or one number per layer.
    """
    if not isinstance(counts, int):
        return [sorted(s.argsort()[:n].tolist()) for s, n in zip(scores, counts, strict=True)]
    ranked = []
    for i, s in enumerate(scores):
        best = int(s.argmax())
        ranked += [(float(s[h]), i, h) for h in range(len(s)) if h != best]
    ranked.sort()
    plan: list[list[int]] = [[] for _ in scores]
    for _, i, h in ranked[:counts]:
        plan[i].append(h)
    return [sorted(p) for p in plan]


# --- doing -----------------------------------------------------------------------------------


def remove_heads(sites: Sequence[HeadSite], plan: Sequence[Sequence[int]]) -> None:
    """Physically remove ``plan[i]`` (head indices) from ``sites[i]``, in place."""
    for site, drop in zip(sites, plan, strict=True):
        if not drop:
            continue
        keep_heads = [h for h in range(site.num_heads) if h not in set(drop)]
        if not keep_heads:
            raise HeadsExhausted(
                f"removing heads {list(drop)} would leave {site.name} with no heads; keep one"
            )
        d = site.head_dim
        idx = torch.tensor([h * d + j for h in keep_heads for j in range(d)])
        q, k, v = (_slice(p, idx, dim=0) for p in site.projections())
        site.replace(q, k, v, _slice(site.output(), idx, dim=1))


def _slice(linear: nn.Linear, idx: Tensor, *, dim: int) -> nn.Linear:
    w = linear.weight.detach().index_select(dim, idx.to(linear.weight.device))
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            b = linear.bias.detach()
            new.bias.copy_(b.index_select(0, idx.to(b.device)) if dim == 0 else b)
    new.train(linear.training)
    return new


def attention_memory(model: nn.Module, bytes_per_value: int = 4) -> dict[str, Any]:
    """Attention K/V memory per token: 2 × Σ_layers kept heads × head_dim × bytes."""
    sites = find_heads(model)
    heads = [s.num_heads for s in sites]
    per_token = 2 * sum(h * s.head_dim for h, s in zip(heads, sites, strict=True))
    return {
        "kv_bytes_per_token": per_token * bytes_per_value,
        "heads_per_layer": heads,
        "heads": sum(heads),
        "layers": len(sites),
        "head_dim": sites[0].head_dim,
        "bytes_per_value": bytes_per_value,
    }


# --- the Pruner ------------------------------------------------------------------------------


def target_value(target: Any, key: str) -> float:
    """A number from ``0.4``, ``{"heads": 0.4}`` or a recipe ``Target`` (``.value``)."""
    if isinstance(target, Mapping):
        target = target.get(key)
    value = getattr(target, "value", target)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"target={target!r}: expected {{{key}: <number>}}")
    return float(value)


class HeadPruner:
    """The Pruner protocol for attention heads (``step()`` removes the next share).

    With ``steps > 1`` the removed fraction ramps linearly to ``target`` and heads are
    re-scored on the current weights before each step. ``nn.MultiheadAttention`` /
    ``nn.TransformerEncoderLayer`` modules are converted in place first.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        criterion: str = "taylor",
        target: Any,
        scope: str | None = "global",
        steps: int = 1,
        calibration: Iterable[Batch] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        forward: Forward | None = None,
        seed: int = 0,
    ) -> None:
        if criterion not in HEAD_CRITERIA:
            raise ConfigError(
                f"criterion={criterion!r} for heads: must be one of {', '.join(HEAD_CRITERIA)}"
            )
        convert_attention(model)
        self.model, self.criterion, self.scope = model, criterion, scope or "global"
        self.fraction, self.steps, self.seed = target_value(target, "heads"), steps, seed
        self.sites = find_heads(model)
        self.original = [s.num_heads for s in self.sites]
        names = [s.name for s in self.sites]
        removal_counts(self.original, self.fraction, self.scope, names=names)  # validate now
        self.calibration = list(calibration) if calibration is not None else []
        self.forward = forward
        self.loss = _label_loss(loss_fn) if loss_fn is not None else None
        self.alive = [list(range(h)) for h in self.original]  # original ids of kept heads
        self.done = 0
        self.memory_before = attention_memory(model)

    def step(self) -> None:
        if self.done >= self.steps:
            return
        self.done += 1
        share = self.fraction * self.done / self.steps
        wanted = removal_counts(self.original, share, self.scope)
        removed = [o - len(a) for o, a in zip(self.original, self.alive, strict=True)]
        if isinstance(wanted, int):
            counts: int | list[int] = max(0, wanted - sum(removed))
        else:
            counts = [max(0, w - r) for w, r in zip(wanted, removed, strict=True)]
        scores = score_heads(
            self.model, self.sites, self.criterion, self.calibration,
            forward=self.forward, loss=self.loss, seed=self.seed + self.done - 1,
        )  # fmt: skip
        plan = plan_removal(scores, counts)
        remove_heads(self.sites, plan)
        for alive, drop in zip(self.alive, plan, strict=True):
            for h in sorted(drop, reverse=True):
                del alive[h]

    def finish(self) -> None:
        while self.done < self.steps:
            self.step()

    def report(self) -> dict[str, Any]:
        """JSON-able: kept/removed heads (original indices) per layer and K/V memory."""
        return {
            "heads_before": sum(self.original),
            "heads_after": sum(len(a) for a in self.alive),
            "kept_heads": {s.name: a for s, a in zip(self.sites, self.alive, strict=True)},
            "attention_memory_before": self.memory_before,
            "attention_memory_after": attention_memory(self.model),
        }


def _label_loss(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Loss:
    def loss(output: Tensor, batch: Batch) -> Tensor:
        return loss_fn(output, batch[1])

    return loss
