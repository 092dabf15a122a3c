"""The schedule that drives a pruner (:mod:`pruning.methods`), and the amount it prunes.

A schedule is ``steps`` rounds of ``pruner.step()``; between rounds the caller's ``recover``
finetunes the model so the next round scores the weights that survived. A one-shot schedule
is the one-step case. ``finish()`` comes after the final finetune: the mask pruners keep their
masks installed until then, so finetuning cannot regrow the zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.methods import PruneContext, Pruner, example_of
from pruneguard.pruning.recipe import Recipe

if TYPE_CHECKING:
    from torch import nn

__all__ = ["resolve_amount", "run_schedule"]


def resolve_amount(recipe: Recipe, model: nn.Module, ctx: PruneContext) -> float:
    """The number the pruner takes: a MAC target becomes the channel ratio that reaches it."""
    if recipe.target.kind != "macs_reduction":
        return recipe.target.value
    from pruneguard.pruning.methods.channels import ratio_for_mac_reduction

    return ratio_for_mac_reduction(
        model,
        example_of(ctx),
        recipe.target.value,
        round_to=recipe.round_to,
        ignored_layers=ctx.ignored_layers or None,
    )


def run_schedule(pruner: Pruner, steps: int, recover: Callable[[int], Any]) -> None:
    """``steps`` rounds of pruning with ``recover(step)`` between them (not after the last)."""
    for i in range(steps):
        pruner.step()
        if i < steps - 1:
            recover(i)
