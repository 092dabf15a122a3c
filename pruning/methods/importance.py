"""Channel importance criteria, as torch_pruning ``Importance`` objects.

========== ============================================================== ===========
criterion  score of a channel (summed over the layers of its group)       needs data
========== ============================================================== ===========
l1         Σ|w| of the channel's weights (tp ``GroupMagnitudeImportance``) no
l2         Σw² of the channel's weights (same, ``p=2``)                    no
gradient   Σ|∂L/∂w| of the channel's weights over calibration batches      yes
taylor     Σ|w·∂L/∂w| — first-order Taylor (tp ``GroupTaylorImportance``)  yes
activation mean |activation| of the channel over calibration batches       yes (no labels)
random     uniform noise (tp ``RandomImportance``): the control            no
========== ============================================================== ===========

Scores are per group (channels tied by residual adds, concatenation, depthwise convs are
scored together) because torch_pruning's dependency graph hands us whole groups.
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
    "make_importance",
    "prepare_importance",
]

CRITERIA = ("l1", "l2", "gradient", "taylor", "activation", "random")
DATA_CRITERIA = frozenset({"gradient", "taylor", "activation"})

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


_FACTORIES: dict[str, Callable[[], Any]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "gradient": GradientImportance,
    "taylor": tp.importance.GroupTaylorImportance,
    "activation": ActivationImportance,
    "random": tp.importance.RandomImportance,
}


def make_importance(criterion: str) -> Any:
    """A fresh torch_pruning importance object for ``criterion`` (one of :data:`CRITERIA`)."""
    from pruneguard.registry.errors import ConfigError

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

    Gradient criteria get ∂L/∂w accumulated over the batches in ``.grad``; activation gets
    per-channel statistics. BatchNorm statistics are not touched (eval mode).
    """
    if not isinstance(
        importance, GradientImportance | ActivationImportance | tp.importance.GroupTaylorImportance
    ):
        return
    was_training = model.training
    model.eval()
    try:
        if isinstance(importance, ActivationImportance):
            importance.collect(model, (x for x, _ in calibration))
            return
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for x, y in calibration:
                loss_fn(model(x), y).backward()
    finally:
        model.train(was_training)
