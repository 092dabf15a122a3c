"""The Pruner protocol, the table of pruners by method, and the schedule that drives one.

A schedule is ``steps`` rounds of ``pruner.step()``; between rounds the caller's ``recover``
finetunes the model so the next round scores the weights that survived. A one-shot schedule
is the one-step case. ``finish()`` comes after the final finetune: the mask pruners keep their
masks installed until then, so finetuning cannot regrow the zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pruneguard.pruning.recipe import NM_SPARSITY, Recipe

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRUNERS", "PruneContext", "Pruner", "build_pruner", "resolve_amount", "run_schedule"]


class Pruner(Protocol):
    def step(self) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may need besides the model: an example batch and calibration data."""

    example_inputs: torch.Tensor
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    ignored_layers: list[nn.Module] = field(default_factory=list)


Builder = Callable[["nn.Module", Recipe, float, PruneContext], Pruner]


def _channel(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.structured import ChannelPruner

    return ChannelPruner(
        model,
        ctx.example_inputs,
        criterion=recipe.criterion,
        ratio=amount,
        steps=recipe.schedule.steps,
        round_to=recipe.round_to,
        calibration=ctx.calibration,
        loss_fn=ctx.loss_fn,
        ignored_layers=ctx.ignored_layers or None,
        global_pruning=recipe.scope == "global",
    )


def _unstructured(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.unstructured import MaskPruner

    scope = recipe.scope or "global"
    return MaskPruner(model, sparsity=amount, steps=recipe.schedule.steps, scope=scope)  # type: ignore[arg-type]


def _nm(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.unstructured import MaskPruner

    return MaskPruner(model, sparsity=NM_SPARSITY, steps=recipe.schedule.steps, nm=(2, 4))


def _head(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.heads import HeadPruner

    return HeadPruner(
        model,
        criterion=recipe.criterion,
        target=amount,
        scope=recipe.scope,
        steps=recipe.schedule.steps,
        calibration=ctx.calibration,
        loss_fn=ctx.loss_fn,
        seed=recipe.seed,
    )


def _layer(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.layers import LayerPruner

    return LayerPruner(
        model,
        criterion=recipe.criterion,
        target=amount,
        steps=recipe.schedule.steps,
        calibration=ctx.calibration,
        loss_fn=ctx.loss_fn,
        seed=recipe.seed,
    )


def _ffn(model: nn.Module, recipe: Recipe, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.ffn import FfnPruner

    return FfnPruner(
        model,
        criterion=recipe.criterion,
        target=amount,
        scope=recipe.scope,
        steps=recipe.schedule.steps,
        calibration=ctx.calibration,
        loss_fn=ctx.loss_fn,
        seed=recipe.seed,
    )


PRUNERS: dict[str, Builder] = {
    "channel": _channel,
    "unstructured": _unstructured,
    "nm": _nm,
    "head": _head,
    "layer": _layer,
    "ffn": _ffn,
}


def resolve_amount(recipe: Recipe, model: nn.Module, ctx: PruneContext) -> float:
    """The number the pruner takes: a MAC target becomes the channel ratio that reaches it."""
    if recipe.target.kind != "macs_reduction":
        return recipe.target.value
    from pruneguard.pruning.structured import ratio_for_mac_reduction

    return ratio_for_mac_reduction(
        model,
        ctx.example_inputs,
        recipe.target.value,
        round_to=recipe.round_to,
        ignored_layers=ctx.ignored_layers or None,
    )


def build_pruner(recipe: Recipe, model: nn.Module, amount: float, ctx: PruneContext) -> Pruner:
    return PRUNERS[recipe.method](model, recipe, amount, ctx)


def run_schedule(pruner: Pruner, steps: int, recover: Callable[[int], Any]) -> None:
    """``steps`` rounds of pruning with ``recover(step)`` between them (not after the last)."""
    for i in range(steps):
        pruner.step()
        if i < steps - 1:
            recover(i)
