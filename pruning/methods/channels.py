"""Structured channel pruning: channels are physically removed, via torch_pruning.

torch_pruning's :class:`DependencyGraph` finds which layers must lose the same channels
(residual adds, ``torch.cat``, depthwise and grouped convs, BatchNorm, flatten → linear) and
its ``BasePruner`` (formerly ``MetaPruner``) ranks and removes them; this module chooses the
criterion, keeps the classifier's outputs, and searches the ratio for a MAC target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from pruneguard.pruning.errors import TargetUnreachable
from pruneguard.pruning.measure import count_macs
from pruneguard.pruning.methods.importance import DATA_CRITERIA, make_importance, prepare_importance
from pruneguard.registry.errors import ConfigError, Conflict

__all__ = [
    "ChannelPruner",
    "allocate_globally",
    "find_classifier",
    "ratio_for_mac_reduction",
    "recalibrate_batchnorm",
]

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
_BN = nn.modules.batchnorm._BatchNorm
MAX_RATIO = 0.95
RATIO_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, MAX_RATIO)


def find_classifier(model: nn.Module, example_inputs: torch.Tensor) -> nn.Module | None:
    """The last conv/linear layer run by ``forward``: its outputs are the classes, never pruned."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, _PRUNABLE)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order[-1] if order else None


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean/var on ``batches``; weights are untouched.

    Removing channels changes what the layers after them compute, so the running statistics
    of the BatchNorms that follow are stale (on digits-cnn, 10% of channels removed took
    accuracy from 0.99 to ~0.5 until recalibrated, back to ~0.97). Only the BatchNorms run
    in train mode (cumulative average over the batches); all modes are restored. Returns the
    number of batches seen (0 and no change when the model has no BatchNorm).
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    inputs = list(batches)
    if not bns or not inputs:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    model.eval()
    seen = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch weighs the same
            bn.train()
        for x in inputs:
            model(x)
            seen += 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    return seen


class _BasePruner(tp.pruner.BasePruner):
    """tp's BasePruner, except that rounding never empties a layer.

    tp 1.6 rounds the kept channels *down* to a multiple of ``round_to``, which reaches 0 for
    a narrow layer at a high ratio; here a layer keeps at least ``round_to`` channels (or all
    it has, if fewer). We always pass ``round_to`` (1 when unset) so this guard also keeps
    one channel in layers that a high ratio would otherwise empty.
    """

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        keep = current_channels - n_pruned
        keep = max(keep - keep % round_to, min(round_to, current_channels))
        return current_channels - keep


def _check_grouped(model: nn.Module, round_to: int | None, ignored: list[nn.Module]) -> None:
    if round_to is None or round_to == 1:
        return
    skip = {id(m) for layer in ignored for m in layer.modules()}
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.modules.conv._ConvNd)
            and 1 < m.groups < m.in_channels
            and id(m) not in skip
        ):
            raise ConfigError(
                f"round_to={round_to} with the grouped conv {name!r} (groups={m.groups}): "
                "torch_pruning 1.6 rounds a whole layer, not each group, and can empty the "
                "groups. Fix: leave round_to unset for this model, or ignore that layer."
            )


def _check_concats(graph: Any) -> None:
    """Refuse a ``torch.cat`` whose channels torch_pruning could not map to their producers.

    torch_pruning 1.6 only knows the channels of a concat input that a layer produced. When
    one input is the model's own input (a DenseNet-style net without a stem conv) the concat
    gets no index mapping, and every concat built on it maps channels to the wrong layers:
    the pruned model fails at its first BatchNorm (``running_mean should contain ...``).
    """
    names = graph._module2name
    feeding = {
        names[n.module]
        for module, node in graph.module2node.items()
        if isinstance(module, tp.ops._ConcatOp) and getattr(module, "offsets", None) is None
        for n in node.inputs
        if n.module in names
    }
    if feeding:
        near = next(name for name in names.values() if name in feeding)
        raise ConfigError(
            f"channel pruning cannot follow the torch.cat fed by layer {near!r}: one of its "
            "inputs is not the output of a layer (the model's own input, or a tensor made "
            "outside any module), so torch_pruning 1.6 would remove mismatched channels. "
            "Fix: start the network with a conv (a stem) before the first torch.cat, or "
            "use method: unstructured for this model."
        )


def _validate(
    criterion: str, ratio: float, steps: int, round_to: int | None, calibration: Any
) -> None:
    make_importance(criterion)  # raises ConfigError naming the allowed criteria
    if not 0.0 <= ratio <= MAX_RATIO:
        raise ConfigError(
            f"channel ratio {ratio} is out of range; allowed: 0 <= ratio <= {MAX_RATIO} "
            "(the fraction of channels removed). Fix: e.g. ratio: 0.5."
        )
    if steps < 1:
        raise ConfigError(f"steps={steps}: need at least 1. Fix: schedule steps >= 1.")
    if round_to is not None and round_to < 1:
        raise ConfigError(
            f"round_to={round_to}: must be a positive channel multiple (e.g. 8) or unset."
        )
    if criterion in DATA_CRITERIA and calibration is None:
        raise ConfigError(
            f"criterion {criterion!r} scores channels from data but no calibration batches were "
            "given. Fix: pass calibration=(inputs, labels) batches, or use l1/l2/random."
        )


class ChannelPruner:
    """Removes ``ratio`` of the channels of every prunable group, in ``steps`` equal steps.

    Each :meth:`step` re-scores channels on the current weights (after any finetuning) and
    prunes up to the step's share of the target. Data criteria read ``calibration`` batches
    of ``(inputs, labels)``; ``loss_fn`` defaults to cross-entropy. ``global_pruning=True``
    ranks all groups together at every step (uneven widths) instead of the same ratio per
    group. ``widths`` (layer name → target output channels, from :func:`allocate_globally`)
    replaces ``ratio``: each named layer's group shrinks to its width in the same equal
    steps; groups it does not name keep theirs. With ``calibration``, each step ends by
    re-estimating the BatchNorm running statistics on its inputs
    (:func:`recalibrate_batchnorm`; ``recalibrate_bn=False`` skips it).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        *,
        criterion: str,
        ratio: float,
        steps: int = 1,
        round_to: int | None = None,
        calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        ignored_layers: list[nn.Module] | None = None,
        global_pruning: bool = False,
        widths: Mapping[str, int] | None = None,
        recalibrate_bn: bool = True,
    ) -> None:
        _validate(criterion, ratio, steps, round_to, calibration)
        per_layer = None if widths is None else _per_layer(model, widths)
        self.model = model
        self.criterion = criterion
        self.steps = steps
        self._calibration = calibration
        self._recalibrate_bn = recalibrate_bn
        self._loss_fn = loss_fn or F.cross_entropy
        self._importance = make_importance(criterion)
        ignored = list(ignored_layers or [])
        head = find_classifier(model, example_inputs)
        if head is not None:
            ignored.append(head)
        _check_grouped(model, round_to, ignored)
        was_training = model.training
        model.eval()  # tracing runs forward: keep BatchNorm statistics as they are
        try:
            self._pruner = _BasePruner(
                model,
                example_inputs,
                importance=self._importance,
                pruning_ratio=ratio if per_layer is None else 0.0,
                pruning_ratio_dict=per_layer,
                iterative_steps=steps,
                ignored_layers=ignored,
                round_to=round_to or 1,
                global_pruning=global_pruning and per_layer is None,
            )
        finally:
            model.train(was_training)
        _check_concats(self._pruner.DG)
        self.steps_done = 0

    def step(self) -> None:
        """Score the channels on the current weights and prune this step's share."""
        if self.steps_done >= self.steps:
            raise Conflict(
                f"ChannelPruner already ran all {self.steps} steps. Fix: call step() at most "
                "`steps` times (finish() needs no extra step)."
            )
        if self._calibration is not None:
            prepare_importance(self._importance, self.model, self._calibration, self._loss_fn)
        try:
            self._pruner.step()
        finally:
            self.model.zero_grad(set_to_none=True)
        if self._calibration is not None and self._recalibrate_bn:
            recalibrate_batchnorm(self.model, (x for x, _ in self._calibration))
        self.steps_done += 1

    def finish(self) -> None:
        """Nothing left to do: channels were removed at each step."""

    def report(self) -> dict[str, Any]:
        """JSON-able: what the manifest's pruning section does not already say."""
        return {"channel_steps_done": self.steps_done}


def _per_layer(model: nn.Module, widths: Mapping[str, int]) -> dict[nn.Module, float]:
    """Each named layer's ratio, relative to its width now, that ends at its target width."""
    found = dict(model.named_modules())
    unknown = sorted(set(widths) - set(found))
    if unknown:
        raise ConfigError(
            f"target widths name layers this model does not have: {', '.join(unknown[:5])}. "
            "Fix: compute them (allocate_globally) on this model or a copy of it."
        )
    now = _widths(model)
    # torch_pruning keeps int(width * (1 - ratio)) channels: a hair under the exact share
    # keeps float error from costing a channel
    return {
        found[name]: 1.0 - kept / now[name] - 1e-9
        for name, kept in widths.items()
        if 0 < kept < now[name]
    }


def _widths(model: nn.Module) -> dict[str, int]:
    return {
        name: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        for name, m in model.named_modules()
        if isinstance(m, _PRUNABLE)
    }


def allocate_globally(
    model: nn.Module, example_inputs: torch.Tensor, ratio: float, **kwargs: Any
) -> dict[str, int]:
    """Target widths (layer name → output channels) from one ranking of every channel of
    ``model`` (unchanged) together.

    Torch-Pruning's global ranking (scores normalised per group) prunes a copy by ``ratio``
    of all channels; the widths it leaves are the targets. :class:`ChannelPruner`
    (``widths=``) reaches them from any starting widths in any number of steps, so a MAC
    target searched on the ranking holds for the whole schedule, a safety-net retry
    included. ``kwargs`` go to :class:`ChannelPruner` (criterion, calibration, loss_fn,
    ignored_layers, round_to).
    """
    pruned = copy.deepcopy(model)
    kwargs["ignored_layers"] = _submodules(model, kwargs.get("ignored_layers"), pruned)
    before = _widths(model)
    ChannelPruner(pruned, example_inputs, ratio=ratio, global_pruning=True,
                  recalibrate_bn=False, **kwargs).step()  # fmt: skip
    return {name: w for name, w in _widths(pruned).items() if w < before[name]}


def _submodules(
    model: nn.Module, layers: list[nn.Module] | None, copy_: nn.Module
) -> list[nn.Module]:
    names = {m: n for n, m in model.named_modules()}
    return [copy_.get_submodule(names[m]) for m in layers or []]


def _reduction_at(
    model: nn.Module, x: torch.Tensor, ratio: float, dense_macs: int, **kwargs: Any
) -> float:
    pruned = copy.deepcopy(model)
    kwargs["ignored_layers"] = _submodules(model, kwargs.get("ignored_layers"), pruned)
    kwargs.setdefault("criterion", "l1")  # uniform widths do not depend on the criterion
    ChannelPruner(pruned, x, ratio=ratio, recalibrate_bn=False, **kwargs).step()
    return 1.0 - count_macs(pruned, x) / dense_macs


def ratio_for_mac_reduction(
    model: nn.Module,
    example_inputs: torch.Tensor,
    reduction: float,
    *,
    round_to: int | None = None,
    ignored_layers: list[nn.Module] | None = None,
    tolerance: float = 5e-3,
    ranked: Mapping[str, Any] | None = None,
) -> float:
    """The smallest channel ratio whose pruning removes at least ``reduction`` of the MACs.

    ``reduction=0.7`` means 70% fewer MACs. The model is not modified (deep copies); with
    uniform per-group pruning the MACs do not depend on the criterion. With ``ranked``
    (criterion, calibration, loss_fn: the :class:`ChannelPruner` arguments of a global
    ranking) the ratio is that of :func:`allocate_globally`, whose widths do.

    The MACs removed do not always grow with the ratio. torch_pruning leaves a grouped conv's
    coupled channels at full width once the ratio would remove every channel of a group
    (``groups=8`` over 64 channels: from ratio 0.875 on), and ``round_to`` makes steps. So
    the ratio is first read off a grid (:data:`RATIO_GRID`); the target's reach is the grid's
    best, and bisection runs between the last grid ratio short of the target and the first
    that meets it. Raises :class:`TargetUnreachable` when no grid ratio meets it.
    """
    if not 0.0 < reduction < 1.0:
        raise ConfigError(
            f"macs_reduction {reduction} is out of range; allowed: 0 < macs_reduction < 1 "
            "(0.7 = 70% fewer MACs). Fix: e.g. macs_reduction: 0.5."
        )
    dense = count_macs(model, example_inputs)
    opts: dict[str, Any] = {"round_to": round_to, "ignored_layers": ignored_layers}
    if ranked is not None:
        opts.update(ranked, global_pruning=True)
    reached = [(r, _reduction_at(model, example_inputs, r, dense, **opts)) for r in RATIO_GRID]
    best_ratio, best = max(reached, key=lambda rr: rr[1])
    if best < reduction:
        raise TargetUnreachable(
            f"macs_reduction {reduction} is unreachable: channel pruning removes at most "
            f"{best:.3f} of the MACs (at ratio {best_ratio:g}; the classifier, input channels "
            f"and ignored layers keep theirs{'; widths from one global ranking' if ranked else ''}"
            f"). Fix: set macs_reduction <= {best:.3f}"
            + (", or scope: layer (the same share of every layer)." if ranked else ".")
        )
    first = next(i for i, (_, r) in enumerate(reached) if r >= reduction)
    lo, hi = (reached[first - 1][0] if first else 0.0), reached[first][0]
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if _reduction_at(model, example_inputs, mid, dense, **opts) >= reduction:
            hi = mid
        else:
            lo = mid
    return hi
