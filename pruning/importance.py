"""Channel importance criteria, as torch_pruning ``Importance`` objects.

========== ============================================================== ===========
criterion  score of a channel (summed over the layers of its group)       needs data
========== ============================================================== ===========
l1         Σ|w| of the channel's weights (tp ``GroupMagnitudeImportance``) no
l2         Σw² of the channel's weights (same, ``p=2``)                    no
gradient   Σ|∂L/∂w| of the channel's weights over calibration batches      yes
taylor     E‖Δ logits‖² when the channel is zeroed, to first order         yes (no labels)
activation mean |activation| of the channel over calibration batches       yes (no labels)
random     uniform noise (tp ``RandomImportance``): the control            no
========== ============================================================== ===========

Scores are per group (channels tied by residual adds, concatenation, depthwise convs are
scored together) because torch_pruning's dependency graph hands us whole groups.

Why taylor looks at the logits and not the loss: a trained model sits near a minimum of its
training loss, where ∂L/∂w is close to zero and its sign flips from batch to batch, so the
loss-based Taylor score (Σ|w·∂L/∂w|) ranked channels no better than random on the digits CNN
(docs/pruning.md has the figures). How far the outputs move does not vanish there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as F

__all__ = [
    "CRITERIA",
    "DATA_CRITERIA",
    "ActivationImportance",
    "GradientImportance",
    "TaylorImportance",
    "make_importance",
    "prepare_importance",
]

CRITERIA = ("l1", "l2", "gradient", "taylor", "activation", "random")
DATA_CRITERIA = frozenset({"gradient", "taylor", "activation"})
TAYLOR_PROJECTIONS = 4  # random projections of the logits per calibration batch

_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm
_OUT_FNS = (F.prune_conv_out_channels, F.prune_linear_out_channels)
_IN_FNS = (F.prune_conv_in_channels, F.prune_linear_in_channels)
_DW_FNS = (F.prune_depthwise_conv_out_channels, F.prune_depthwise_conv_in_channels)


class _ChannelScoreImportance(tp.importance.GroupMagnitudeImportance):
    """Reduces per-layer channel scores over a group the way tp's magnitude importance does."""

    def _layer_scores(self, group: Any, fns: tuple[Callable[..., Any], ...]) -> tuple[list, list]:
        scores, root_idxs = [], []
        for i, (dep, idxs) in enumerate(group):
            if dep.pruning_fn in fns:
                score = self._score(dep.layer, dep.pruning_fn, list(idxs))
                if score is not None:
                    scores.append(score)
                    root_idxs.append(group[i].root_idxs)
        return scores, root_idxs

    def _score(
        self, layer: nn.Module, fn: Callable[..., Any], idxs: list[int]
    ) -> torch.Tensor | None:
        raise NotImplementedError

    def _finish(self, scores: list, root_idxs: list) -> torch.Tensor | None:
        if not scores:
            return None  # tp skips groups without a score
        return self._normalize(self._reduce(scores, root_idxs), self.normalizer)


class GradientImportance(_ChannelScoreImportance):
    """Σ|∂L/∂w| over a channel's weights; gradients come from :func:`prepare_importance`."""

    def __init__(self) -> None:
        super().__init__(p=1)

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores, roots = self._layer_scores(
            group, (*_OUT_FNS, *_IN_FNS, *_DW_FNS, F.prune_batchnorm_out_channels)
        )
        return self._finish(scores, roots)

    def _score(
        self, layer: nn.Module, fn: Callable[..., Any], idxs: list[int]
    ) -> torch.Tensor | None:
        grad = getattr(layer, "weight", None)
        grad = None if grad is None else grad.grad
        if grad is None:
            return None
        transposed = getattr(layer, "transposed", False)
        if fn in _IN_FNS:
            g = (grad if transposed else grad.transpose(0, 1)).flatten(1).abs().sum(1)
            if isinstance(layer, _CONV) and layer.groups not in (1, layer.in_channels):
                g = g.repeat(layer.groups)
            return g[idxs]
        if isinstance(layer, _BN):
            return grad[idxs].abs()
        g = grad.transpose(0, 1) if transposed else grad
        return g[idxs].flatten(1).abs().sum(1)


class ActivationImportance(_ChannelScoreImportance):
    """Mean |activation| per channel, gathered by forward hooks over calibration batches.

    A channel is scored by what its consumers read (the input of the next conv/linear, after
    the nonlinearity); a group without a scored consumer falls back to its producers' outputs.
    """

    def __init__(self) -> None:
        super().__init__(p=1)
        self._inputs: dict[nn.Module, torch.Tensor] = {}
        self._outputs: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def collect(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
        """Run ``batches`` through ``model`` and keep mean |activation| per channel."""
        sums: dict[tuple[str, nn.Module], torch.Tensor] = {}
        counts: dict[tuple[str, nn.Module], int] = {}

        def add(key: tuple[str, nn.Module], t: torch.Tensor, dim: int) -> None:
            flat = t.detach().abs().movedim(dim, -1).reshape(-1, t.shape[dim])
            sums[key] = sums.get(key, 0) + flat.sum(0)
            counts[key] = counts.get(key, 0) + flat.shape[0]

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            dim = -1 if isinstance(module, nn.Linear) else 1
            if inputs and isinstance(inputs[0], torch.Tensor):
                add(("in", module), inputs[0], dim)
            add(("out", module), output, dim)

        handles = [
            m.register_forward_hook(hook)
            for m in model.modules()
            if isinstance(m, _CONV | nn.Linear | _BN)
        ]
        try:
            for x in batches:
                model(x)
        finally:
            for h in handles:
                h.remove()
        self._inputs = {m: s / counts[(k, m)] for (k, m), s in sums.items() if k == "in"}
        self._outputs = {m: s / counts[(k, m)] for (k, m), s in sums.items() if k == "out"}

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores, roots = self._layer_scores(group, _IN_FNS)
        if not scores:
            scores, roots = self._layer_scores(
                group, (*_OUT_FNS, *_DW_FNS, F.prune_batchnorm_out_channels)
            )
        return self._finish(scores, roots)

    def _score(
        self, layer: nn.Module, fn: Callable[..., Any], idxs: list[int]
    ) -> torch.Tensor | None:
        stats = self._inputs if fn in _IN_FNS else self._outputs
        values = stats.get(layer)
        return None if values is None else values[idxs]


class TaylorImportance(_ChannelScoreImportance):
    """First-order estimate of how much zeroing a channel moves the logits, squared, per row.

    Where layer L reads channel c, zeroing it changes the logits z of row s by about
    −Σ a·∂z/∂a over L's input a in channel c (L's own input: other paths held fixed). The
    readers of a group (a residual stream is read by several layers) add up before squaring.
    ‖·‖² over the logits is estimated with random projections: for v with independent N(0, 1)
    entries, E[(v·J)²] = ‖J‖², and the rows of a batch have their own v, so one backward pass
    of ``(z * v).sum()`` serves the whole batch (:func:`prepare_importance`).
    """

    def __init__(self) -> None:
        super().__init__(p=1)
        self.reads: dict[nn.Module, list[torch.Tensor]] = {}  # layer -> per pass: rows × inputs

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        total: torch.Tensor | None = None
        for i, (dep, idxs) in enumerate(group):
            roots = group[i].root_idxs
            if dep.pruning_fn not in _IN_FNS or dep.layer not in self.reads:
                continue
            if any(r is None for r in roots):
                continue
            reads = torch.cat(self.reads[dep.layer])[:, list(idxs)]
            if total is None:
                total = torch.zeros(reads.shape[0], len(group[0][1]))
            total[:, roots] += reads
        if total is None:
            return None  # nothing reads the group (tp leaves it alone)
        return self._normalize((total**2).sum(0), self.normalizer)


_FACTORIES: dict[str, Callable[[], Any]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "gradient": GradientImportance,
    "taylor": TaylorImportance,
    "activation": ActivationImportance,
    "random": tp.importance.RandomImportance,
}


def make_importance(criterion: str) -> Any:
    """A fresh torch_pruning importance object for ``criterion`` (one of :data:`CRITERIA`)."""
    from registry.errors import ConfigError

    if criterion not in _FACTORIES:
        raise ConfigError(
            f"criterion {criterion!r} is unknown; allowed: {', '.join(CRITERIA)}. "
            "Fix: pick one of those names."
        )
    return _FACTORIES[criterion]()


def prepare_importance(
    importance: Any,
    model: nn.Module,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Feed calibration batches to a data-driven criterion (no-op for weight-only ones).

    Gradient gets ∂L/∂w accumulated over the batches in ``.grad``; taylor gets
    :data:`TAYLOR_PROJECTIONS` backward passes of projected logits per batch; activation gets
    per-channel statistics. BatchNorm statistics are not touched (eval mode).
    """
    if not isinstance(importance, GradientImportance | ActivationImportance | TaylorImportance):
        return
    was_training = model.training
    model.eval()
    try:
        if isinstance(importance, ActivationImportance):
            importance.collect(model, (x for x, _ in calibration))
            return
        if isinstance(importance, TaylorImportance):
            _project_logits(importance, model, (x for x, _ in calibration))
            return
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for x, y in calibration:
                loss_fn(model(x), y).backward()
    finally:
        model.train(was_training)


def _project_logits(
    importance: TaylorImportance, model: nn.Module, batches: Iterable[torch.Tensor]
) -> None:
    importance.reads.clear()
    readers = [m for m in model.modules() if isinstance(m, _CONV | nn.Linear)]
    seen: dict[nn.Module, torch.Tensor] = {}

    def own_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].view_as(args[0])  # a node of its own: its gradient is this reader's alone
        seen[module] = x
        return (x, *args[1:])

    handles = [m.register_forward_pre_hook(own_input) for m in readers]
    g = torch.Generator().manual_seed(0)  # the same projections every run: scores reproduce
    try:
        with torch.enable_grad():
            for x in batches:
                for _ in range(TAYLOR_PROJECTIONS):
                    seen.clear()
                    logits = model(x)
                    v = torch.randn(logits.shape, generator=g, dtype=logits.dtype)
                    _add_reads(importance, seen, (logits * v).sum())
    finally:
        for h in handles:
            h.remove()


def _add_reads(importance: TaylorImportance, seen: dict[nn.Module, torch.Tensor], out: Any) -> None:
    layers = [m for m, x in seen.items() if x.requires_grad]
    grads = torch.autograd.grad(out, [seen[m] for m in layers], allow_unused=True)
    for layer, grad in zip(layers, grads, strict=True):
        if grad is None:
            continue
        # Σ a·∂z/∂a per row and input channel: channels are dim 1 of a conv's input and the
        # last dim of a linear's (tokens in between are summed). Autograd would have refused
        # the backward pass had ``a`` been changed in place after the layer read it.
        term = seen[layer].detach() * grad
        if isinstance(layer, _CONV):
            read = term.flatten(2).sum(2)
        else:
            read = term.reshape(term.shape[0], -1, term.shape[-1]).sum(1)
        importance.reads.setdefault(layer, []).append(read)
