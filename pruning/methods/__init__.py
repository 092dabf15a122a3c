"""How to cut a model: one module per method, each a :class:`Pruner`.

| method | module | removes |
|---|---|---|
| ``channel`` | :mod:`.channels` | conv/linear channels (Torch-Pruning's dependency graph) |
| ``unstructured``, ``nm`` | :mod:`.masks` | single weights, or N:M patterns, as masks |
| ``head`` | :mod:`.heads` | attention heads (q/k/v rows, output columns) |
| ``ffn`` | :mod:`.ffn` | FFN intermediate neurons, the same width in every layer |
| ``layer`` | :mod:`.layers` | whole transformer layers |

A pruner is built from a recipe's stage (:func:`build_pruner`); the schedule
(:mod:`pruning.schedule`) calls ``step()`` once per round with recovery between rounds, then
``finish()`` after the final finetune, and ``report()`` says what went, for the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from pruneguard.pruning.recipe import NM_SPARSITY, Recipe, Stage
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRUNERS", "PruneContext", "Pruner", "build_pruner", "example_of", "with_widths"]


class Pruner(Protocol):
    def step(self) -> None:
        """Score what is left and remove (or mask) this round's share."""

    def finish(self) -> None:
        """Reach the final target if rounds remain; called after the final finetune."""

    def report(self) -> dict[str, Any]:
        """JSON-able: what was removed, merged into the manifest's ``pruning`` section."""


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may need besides the model: an example input, calibration batches, the
    loss they are scored by (labelled batches) or the forward that scores them (text)."""

    example_inputs: torch.Tensor | None = None
    calibration: Iterable[Any] | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    forward: Callable[..., torch.Tensor] | None = None
    ignored_layers: list[nn.Module] = field(default_factory=list)
    widths: Mapping[str, int] | None = None  # scope global: each layer's target (see below)


def with_widths(recipe: Recipe, model: nn.Module, amount: float, ctx: PruneContext) -> PruneContext:
    """``ctx`` with the target widths of a global channel ranking of ``model`` (the dense one),
    for ``scope: global``; every pruner of the schedule, a retry's too, shrinks toward them
    (so the MAC target searched on that ranking holds). Otherwise ``ctx`` as it is."""
    if recipe.method != "channel" or recipe.scope != "global":
        return ctx
    from pruneguard.pruning.methods.channels import allocate_globally

    widths = allocate_globally(
        model, example_of(ctx), amount, criterion=recipe.criterion, round_to=recipe.round_to,
        calibration=ctx.calibration, loss_fn=ctx.loss_fn, ignored_layers=ctx.ignored_layers or None,
    )  # fmt: skip
    return replace(ctx, widths=widths)


def example_of(ctx: PruneContext) -> torch.Tensor:
    """The example input a traced method (channels, a MAC target) needs."""
    if ctx.example_inputs is None:
        raise ConfigError(
            "method channel traces the model and needs an example input; build the "
            "PruneContext with example_inputs (pruning.pipeline does)"
        )
    return ctx.example_inputs


Builder = Callable[["nn.Module", Recipe, Stage, float, PruneContext], Pruner]


def _channel(
    model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext
) -> Pruner:
    from pruneguard.pruning.methods.channels import ChannelPruner

    if recipe.scope == "global" and ctx.widths is None:  # no schedule planned them: rank now
        ctx = with_widths(recipe, model, amount, ctx)
    common: dict[str, Any] = {
        "criterion": stage.criterion,
        "round_to": recipe.round_to,
        "calibration": ctx.calibration,
        "loss_fn": ctx.loss_fn,
        "ignored_layers": ctx.ignored_layers or None,
    }
    return ChannelPruner(
        model, example_of(ctx), ratio=amount, steps=recipe.schedule.steps,
        widths=ctx.widths, **common,
    )  # fmt: skip


def _unstructured(
    model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext
) -> Pruner:
    from pruneguard.pruning.methods.masks import MaskPruner

    scope = recipe.scope or "global"
    return MaskPruner(model, sparsity=amount, steps=recipe.schedule.steps, scope=scope)  # type: ignore[arg-type]


def _nm(model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext) -> Pruner:
    from pruneguard.pruning.methods.masks import MaskPruner

    return MaskPruner(model, sparsity=NM_SPARSITY, steps=recipe.schedule.steps, nm=(2, 4))


def _scored(recipe: Recipe, stage: Stage, ctx: PruneContext) -> dict[str, Any]:
    """The arguments the head, FFN and layer pruners share."""
    common: dict[str, Any] = {
        "criterion": stage.criterion,
        "steps": recipe.schedule.steps,
        "calibration": ctx.calibration,
        "seed": recipe.seed,
    }
    if ctx.forward is not None:
        common["forward"] = ctx.forward
    if ctx.loss_fn is not None:
        common["loss_fn"] = ctx.loss_fn
    return common


def _head(
    model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext
) -> Pruner:
    from pruneguard.pruning.methods.heads import HeadPruner

    return HeadPruner(model, target=amount, scope=recipe.scope, **_scored(recipe, stage, ctx))


def _layer(
    model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext
) -> Pruner:
    from pruneguard.pruning.methods.layers import LayerPruner

    return LayerPruner(model, target=int(amount), **_scored(recipe, stage, ctx))


def _ffn(
    model: nn.Module, recipe: Recipe, stage: Stage, amount: float, ctx: PruneContext
) -> Pruner:
    from pruneguard.pruning.methods.ffn import FfnPruner

    # the same width in every layer, whatever scope the recipe gives its heads
    return FfnPruner(model, target=amount, scope="layer", **_scored(recipe, stage, ctx))


PRUNERS: dict[str, Builder] = {
    "channel": _channel,
    "unstructured": _unstructured,
    "nm": _nm,
    "head": _head,
    "layer": _layer,
    "ffn": _ffn,
}


def build_pruner(
    recipe: Recipe, model: nn.Module, amount: float, ctx: PruneContext, stage: Stage | None = None
) -> Pruner:
    """The pruner of ``stage`` (default: the recipe's only method) at ``amount``."""
    stage = stage or recipe.stages[0]
    return PRUNERS[stage.method](model, recipe, stage, amount, ctx)
