"""The schedule that drives a pruner (:mod:`pruning.methods`), and the amount it prunes.

A schedule is ``steps`` rounds of ``pruner.step()``; between rounds the caller's ``recover``
finetunes the model so the next round scores the weights that survived. A one-shot schedule
is the one-step case. An iterative channel schedule has a safety net (:class:`Guard`): a
step that recovery cannot bring back near the previous one is undone and redone smaller. ``finish()`` comes after the final finetune: the mask pruners keep their
masks installed until then, so finetuning cannot regrow the zeros.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.methods import PruneContext, Pruner, example_of
from pruneguard.pruning.recipe import Recipe

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "SAFETY_DROP",
    "Guard",
    "remaining_ratio",
    "resolve_amount",
    "run_schedule",
]

SAFETY_DROP = 0.05  # a step whose guard accuracy falls this far below the previous one's
SWITCH = {"taylor": "l2"}  # the criterion a retry switches to (any other: taylor)


def resolve_amount(recipe: Recipe, model: nn.Module, ctx: PruneContext) -> float:
    """The number the pruner takes: a MAC target becomes the channel ratio that reaches it
    (with ``scope: global``, the ratio of one ranking of ``model``'s channels by the recipe's
    criterion: resolve it on the trained model)."""
    if recipe.target.kind != "macs_reduction":
        return recipe.target.value
    from pruneguard.pruning.methods.channels import ratio_for_mac_reduction

    ranked = None
    if recipe.scope == "global":
        ranked = {"criterion": recipe.criterion, "calibration": ctx.calibration,
                  "loss_fn": ctx.loss_fn}  # fmt: skip
    return ratio_for_mac_reduction(
        model,
        example_of(ctx),
        recipe.target.value,
        round_to=recipe.round_to,
        ignored_layers=ctx.ignored_layers or None,
        ranked=ranked,
    )


@dataclass(frozen=True)
class Guard:
    """What the safety net of an iterative schedule watches: accuracy on rows of the training
    split (never the validation split, which reports the final accuracy)."""

    accuracy: Callable[[nn.Module], float]
    baseline: float  # the dense model's accuracy on the same rows
    max_drop: float = SAFETY_DROP


# make(model, criterion or None for the recipe's, channel ratio or None for the target's, steps)
MakePruner = Callable[["nn.Module", str | None, float | None, int], Pruner]


def remaining_ratio(ratio: float, done: int, steps: int) -> float:
    """The ratio, relative to the widths after ``done`` of ``steps`` equal steps, that still
    reaches ``ratio`` of the original widths (torch_pruning's steps are linear in the ratio)."""
    kept_now = 1.0 - ratio * done / steps
    return 1.0 - (1.0 - ratio) / kept_now


def run_schedule(
    model: nn.Module,
    make: MakePruner,
    *,
    ratio: float,
    criterion: str,
    steps: int,
    recover: Callable[[nn.Module, int, int], Any],
    guard: Guard | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[nn.Module, Pruner, list[dict[str, Any]]]:
    """``steps`` rounds of ``pruner.step()`` with ``recover(model, step, steps)`` between them (not
    after the last), and, with a ``guard``, a safety net: after each recovery the guard
    accuracy is compared with the previous step's; when it falls more than
    ``guard.max_drop`` below, the step is undone (the model as it was before it) and the rest
    of the schedule is redone once, with the other criterion, in twice as many smaller steps.

    Returns the model (another object when a step was undone), its pruner, and what the net
    saw, for the manifest: one record per recovered step, with the retry's action.
    """
    pruner = make(model, None, None, steps)
    previous, records = guard.baseline if guard else 0.0, []
    retried = guard is None  # no guard: nothing to watch, nothing to undo
    i, total = 0, steps
    while True:
        snapshot = copy.deepcopy(model) if not retried and i < total - 1 else None
        pruner.step()
        if i == total - 1:
            break
        recover(model, i, total)
        if guard is None:
            i += 1
            continue
        accuracy = guard.accuracy(model)
        record: dict[str, Any] = {
            "step": i + 1,
            "guard_accuracy": round(accuracy, 4),
            "previous": round(previous, 4),
        }
        if snapshot is not None and accuracy < previous - guard.max_drop:
            left = remaining_ratio(ratio, i, steps)
            switched = SWITCH.get(criterion, "taylor")
            smaller = 2 * (total - i)
            say(f"safety net: step {i + 1}/{total} fell to {accuracy:.4f} on the guard rows "
                f"(previous {previous:.4f}); undoing it, the rest with criterion {switched} in "
                f"{smaller} smaller steps")  # fmt: skip
            records.append(
                {**record, "action": f"undone; redone with {switched} in {smaller} steps"}
            )
            model, retried, criterion = snapshot, True, switched
            pruner = make(model, switched, left, smaller)
            total = i + smaller
            continue
        records.append(record)
        previous = accuracy
        i += 1
    return model, pruner, records
