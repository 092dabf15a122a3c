"""The schedule's safety net: a step that recovery cannot bring back is undone and redone
smaller, with the other criterion; the ratio left to prune keeps the target."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch
import yaml
from tiny_recipes import DIGITS_TINY
from torch import nn

from pruneguard.pruning.measure import count_macs
from pruneguard.pruning.methods import build_pruner
from pruneguard.pruning.pipeline import _context, _guard, prepare
from pruneguard.pruning.recipe import Schedule, parse_recipe
from pruneguard.pruning.schedule import Guard, remaining_ratio, run_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


class _Scripted:
    """A pruner that lowers ``model.quality`` by ``drops[k]`` at its k-th step."""

    def __init__(self, model: Any, drops: list[float]) -> None:
        self.model, self.drops, self.done = model, drops, 0

    def step(self) -> None:
        self.model.quality -= self.drops[self.done]
        self.done += 1

    def finish(self) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {}


def test_a_collapsing_step_is_undone_and_the_rest_redone_smaller() -> None:
    model = nn.Linear(1, 1)
    model.quality = 1.0  # type: ignore[assignment]
    made: list[tuple[str | None, float | None, int]] = []

    def make(m: Any, criterion: str | None, ratio: float | None, steps: int) -> _Scripted:
        made.append((criterion, ratio, steps))
        return _Scripted(m, [0.01, 0.5, 0.01] if criterion is None else [0.01] * steps)

    said: list[str] = []
    final, pruner, records = run_schedule(
        model, make, ratio=0.6, criterion="taylor", steps=3, recover=lambda m, i, n: None,
        guard=Guard(accuracy=lambda m: m.quality, baseline=1.0), say=said.append,
    )  # fmt: skip
    assert made == [(None, None, 3), ("l2", pytest.approx(remaining_ratio(0.6, 1, 3)), 4)]
    assert final is not model  # the snapshot taken before the collapsing step
    assert pruner.done == 4  # the redone pruner ran all its smaller steps
    assert final.quality == pytest.approx(1.0 - 0.01 - 4 * 0.01)
    assert records[0] == {"step": 1, "guard_accuracy": 0.99, "previous": 1.0}
    assert records[1]["step"] == 2 and "undone; redone with l2 in 4 steps" in records[1]["action"]
    assert [r["step"] for r in records[2:]] == [2, 3, 4]  # the smaller steps, recovered
    assert "safety net: step 2/3 fell" in said[0]


def test_without_a_guard_nothing_is_undone() -> None:
    model = nn.Linear(1, 1)
    model.quality = 1.0  # type: ignore[assignment]

    def make(m: Any, criterion: str | None, ratio: float | None, steps: int) -> _Scripted:
        return _Scripted(m, [0.01, 0.5, 0.01])

    final, _, records = run_schedule(model, make, ratio=0.6, criterion="taylor", steps=3,
                                     recover=lambda m, i, n: None)  # fmt: skip
    assert final is model and records == [] and model.quality == pytest.approx(0.48)


@pytest.mark.parametrize(("ratio", "done", "steps"), [(0.6, 1, 3), (0.8, 3, 4), (0.5, 0, 2)])
def test_the_ratio_left_reaches_the_same_widths(ratio: float, done: int, steps: int) -> None:
    kept_now = 1 - ratio * done / steps
    assert kept_now * (1 - remaining_ratio(ratio, done, steps)) == pytest.approx(1 - ratio)


def test_a_real_channel_schedule_undoes_a_sabotaged_step() -> None:
    recipe = parse_recipe(yaml.safe_load(DIGITS_TINY))
    recipe = replace(recipe, schedule=Schedule("iterative", 3))
    prep = prepare(recipe, progress=False)
    ctx = _context(recipe, prep.data, prep.example)
    dense_macs = count_macs(prep.model, prep.example)

    def make(m: nn.Module, criterion: str | None, ratio: float | None, steps: int) -> Any:
        r = recipe if criterion is None else replace(
            recipe, criterion=criterion, schedule=Schedule("iterative", steps))  # fmt: skip
        return build_pruner(r, m, prep.amount if ratio is None else ratio, ctx)

    def sabotage_once(m: nn.Module, step: int, steps: int) -> None:
        if step == 0:
            with torch.no_grad():
                for p in m.parameters():
                    p.normal_()

    final, _, records = run_schedule(
        copy.deepcopy(prep.model), make, ratio=prep.amount, criterion="taylor", steps=3,
        recover=sabotage_once, guard=_guard(ctx, prep.model),
    )  # fmt: skip
    assert "action" in records[0]  # the sabotaged step was caught and undone
    assert final(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # the redone schedule still reaches the target (rounding moves it by a channel or so)
    assert 1 - count_macs(final, prep.example) / dense_macs >= recipe.target.value - 0.03
