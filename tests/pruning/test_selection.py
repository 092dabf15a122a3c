"""``criterion: auto`` / ``schedule: auto``: the candidates, the budget, and a run that records
its trial table; the per-batch learning-rate decay that short recovery rounds rest on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from tiny_recipes import DIGITS_TINY
from torch import nn

from pruneguard.pruning.cli import prune
from pruneguard.pruning.finetune import train
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.pruning.selection import MIN_BATCHES, TRIAL_SHARE, candidates, trial_budget
from pruneguard.registry.artifact import verify
from pruneguard.registry.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

AUTO_TINY = DIGITS_TINY.replace("criterion: taylor", "criterion: auto").replace(
    "schedule: {kind: iterative, steps: 2}", "schedule: {kind: auto, steps: 2}"
)


def _recipe(**changes: Any) -> Any:
    import yaml

    data = yaml.safe_load(AUTO_TINY)
    data.update(changes)
    return parse_recipe(data)


def test_the_prior_orders_the_candidates_and_does_not_drop_any() -> None:
    heavy, _ = candidates(_recipe(target={"macs_reduction": 0.7}))
    assert [(c.criterion, c.schedule.kind) for c in heavy] == [
        ("taylor", "iterative"), ("l2", "iterative"), ("taylor", "one-shot"), ("l2", "one-shot"),
    ]  # fmt: skip
    light, prior = candidates(_recipe(target={"ratio": 0.1}))
    assert [c.schedule.kind for c in light] == ["one-shot", "one-shot", "iterative", "iterative"]
    assert "one-shot first" in prior
    assert all(c.schedule.steps == 2 for c in light if c.schedule.kind == "iterative")


def test_scope_auto_tries_both_scopes_layer_first() -> None:
    tried, prior = candidates(_recipe(scope="auto", target={"macs_reduction": 0.7}))
    assert [(c.schedule.kind, c.scope, c.criterion) for c in tried[:4]] == [
        ("iterative", "layer", "taylor"), ("iterative", "layer", "l2"),
        ("iterative", "global", "taylor"), ("iterative", "global", "l2"),
    ]  # fmt: skip
    assert len(tried) == 8 and "scopes in the order layer, global" in prior
    fixed, _ = candidates(_recipe(scope="global"))
    assert {c.scope for c in fixed} == {"global"} and len(fixed) == 4


def test_a_candidate_that_cannot_reach_the_target_is_recorded_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pruneguard.pruning import pipeline
    from pruneguard.pruning.errors import TargetUnreachable
    from pruneguard.pruning.selection import select

    real = pipeline.prune_copy

    def global_unreachable(prep: Any, recipe: Any = None, **kwargs: Any) -> Any:
        if recipe is not None and recipe.scope == "global":
            raise TargetUnreachable("macs_reduction 0.5 is unreachable ... scope: layer")
        return real(prep, recipe, **kwargs)

    recipe = _recipe(scope="auto", criterion="l2", schedule={"kind": "one-shot"})
    prep = pipeline.prepare(replace(recipe, scope=None), progress=False)
    monkeypatch.setattr(pipeline, "prune_copy", global_unreachable)
    chosen, record = select(replace(prep, recipe=recipe), progress=False)
    trials = record["trials"]
    assert [(t["scope"], t["accuracy"] is None) for t in trials] == [
        ("layer", False), ("global", True),
    ]  # fmt: skip
    assert "unreachable" in trials[1]["note"] and chosen.recipe.scope == "layer"
    monkeypatch.setattr(pipeline, "prune_copy", lambda *a, **k: global_unreachable(
        a[0], replace(a[1], scope="global"), **k))  # fmt: skip
    with pytest.raises(TargetUnreachable):  # none reaches it: the run cannot either
        select(replace(prep, recipe=recipe), progress=False)


def test_scope_auto_narrows_to_layer_when_both_scopes_overrun_the_budget() -> None:
    from pruneguard.pruning import pipeline
    from pruneguard.pruning.selection import select

    recipe = _recipe(scope="auto")  # 8 candidates × 2 passes × 2 batches: 28% of 115 batches
    assert trial_budget(recipe, 23, 18).share > TRIAL_SHARE
    prep = pipeline.prepare(replace(recipe, scope=None), progress=False)
    chosen, record = select(replace(prep, recipe=recipe), progress=False)
    assert [t["scope"] for t in record["trials"]] == ["layer"] * 4
    assert record["budget"]["share_of_run"] <= TRIAL_SHARE
    assert "scope: layer only" in record["prior"] and "28%" in record["prior"]
    assert record["requested"]["scope"] == "auto" and chosen.recipe.scope is None


def test_one_shot_trains_as_long_as_iterative_all_after_its_cut() -> None:
    tried, _ = candidates(_recipe(finetune={"epochs": 4, "lr": 0.002, "recovery_epochs": 2}))
    by_kind = {c.schedule.kind: c.finetune for c in tried}
    assert by_kind["iterative"].epochs == 4 and by_kind["iterative"].recovery_epochs == 2
    assert by_kind["one-shot"].epochs == 4 + 2 * (2 - 1)  # the iterative one's recovery, too


def test_a_fixed_criterion_or_schedule_is_kept() -> None:
    only_schedule, _ = candidates(_recipe(criterion="l1"))
    assert {c.criterion for c in only_schedule} == {"l1"} and len(only_schedule) == 2
    only_criterion, _ = candidates(_recipe(schedule={"kind": "one-shot"}))
    assert [(c.criterion, c.schedule.kind, c.finetune.epochs) for c in only_criterion] == [
        ("taylor", "one-shot", 1),
        ("l2", "one-shot", 1),
    ]  # fmt: skip  (a one-shot recipe keeps its own finetune)


@pytest.mark.parametrize("train_batches", [5, 23, 400])
def test_the_trials_are_the_run_in_small_within_a_bounded_budget(train_batches: int) -> None:
    recipe = _recipe(train={"epochs": 15, "lr": 0.003})
    budget = trial_budget(recipe, train_batches, fit_batches=train_batches)
    # the run: dense training 15 + recovery 1 (2 steps) + final finetune 1 = 17 epochs
    assert budget.run_batches == 17 * train_batches
    # each trial keeps the recipe's finetune: iterative 1 + 1 passes, one-shot as many; 2 each
    assert budget.passes == 2 * (1 + 1) + 2 * 2
    spent = budget.passes * budget.batches_per_pass
    assert spent <= TRIAL_SHARE * budget.run_batches or budget.batches_per_pass == MIN_BATCHES
    assert budget.share == pytest.approx(spent / budget.run_batches)


def test_auto_is_refused_where_no_trial_chooses() -> None:
    masks = {"name": "x", "model": {"builtin": "digits-cnn"}, "data": {"builtin": "digits"},
             "method": "unstructured", "criterion": "l1", "target": {"sparsity": 0.5}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"schedule\.kind=auto.*method channel only"):
        parse_recipe({**masks, "schedule": {"kind": "auto"}})
    with pytest.raises(ConfigError, match=r"criterion.*'auto'"):
        parse_recipe({**masks, "criterion": "auto"})


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("auto-run")
    (tmp / "auto.yaml").write_text(AUTO_TINY)
    result = CliRunner().invoke(prune, [str(tmp / "auto.yaml"), "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    return {"manifest": verify(tmp / "out" / "pruned"), "stderr": result.stderr}


def test_the_run_uses_the_best_trial_and_records_the_table(auto_run: dict[str, Any]) -> None:
    pruning = auto_run["manifest"]["pruning"]
    selection = pruning["selection"]
    trials = selection["trials"]
    assert len(trials) == 4 and selection["budget"]["candidates"] == 4
    best = max(range(4), key=lambda k: (trials[k]["accuracy"], -k))  # ties: the prior's first
    chosen = selection["chosen"]
    assert (chosen["criterion"], chosen["schedule"]["kind"]) == (
        trials[best]["criterion"], trials[best]["schedule"],
    )  # fmt: skip
    assert pruning["finetune"] == chosen["finetune"]  # a one-shot choice trains as it was tried
    # the pruning section says what ran, not "auto"; the request is kept beside it
    assert pruning["criterion"] == chosen["criterion"]
    assert pruning["schedule"] == chosen["schedule"]
    assert selection["requested"] == {"criterion": "auto", "schedule": "auto", "scope": "layer"}
    assert chosen["scope"] == "layer" and {t["scope"] for t in trials} == {"layer"}
    # scored on rows held out of the training split (1,437 digits → 287), not on validation
    assert selection["evaluated_on"]["rows"] == 287
    assert "training split" in selection["evaluated_on"]["split"]
    assert "chose " in auto_run["stderr"] and "trial 4/4" in auto_run["stderr"]
    assert any("chosen by trial" in n for n in auto_run["manifest"]["notes"])


def test_a_one_epoch_recovery_decays_its_learning_rate_within_the_epoch() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(10)]
    snapshots: list[torch.Tensor] = []

    class Recording(list):  # a sized loader that snapshots the weights before each batch
        def __iter__(self) -> Any:
            for batch in super().__iter__():
                snapshots.append(model.weight.detach().clone())
                yield batch

    train(model, Recording(data), epochs=1, lr=0.05, progress=False)
    snapshots.append(model.weight.detach().clone())
    first = (snapshots[1] - snapshots[0]).abs().max()
    last = (snapshots[-1] - snapshots[-2]).abs().max()
    assert last < 0.1 * first  # Adam's step follows the rate: ~lr at first, ~0 at the end


def test_data_that_cannot_be_split_is_scored_on_validation_and_says_so() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from pruneguard.pruning.selection import _split

    ds = TensorDataset(torch.randn(5, 1), torch.zeros(5, dtype=torch.long))
    data = {"train": DataLoader(ds, batch_size=2), "val": DataLoader(ds, batch_size=2)}
    fit, holdout, split = _split(data, seed=0)
    assert fit is data["train"] and holdout is data["val"] and "validation split" in split


def test_a_training_loader_without_a_length_is_refused_with_the_fix() -> None:
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, IterableDataset

    from pruneguard.pruning.selection import select

    class Stream(IterableDataset):
        def __iter__(self) -> Any:
            yield torch.zeros(1, 8, 8), torch.tensor(0)

    prep = SimpleNamespace(recipe=_recipe(), data={"train": DataLoader(Stream(), batch_size=None)})
    with pytest.raises(ConfigError, match=r"iterable dataset.*Fix: .*map-style"):
        select(prep, progress=False)  # type: ignore[arg-type]
