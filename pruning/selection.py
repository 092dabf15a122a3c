"""``criterion: auto``, ``schedule: auto`` and ``scope: auto``: chosen by a short trial on the
user's own model.

A rule of thumb (one shot below ~30% removed, iterative above ~50%, Taylor scores) is
sometimes far off on a net it was not written for. So before pruning for real, each
candidate — criteria :data:`CANDIDATE_CRITERIA` × one-shot and iterative (× the scopes
:data:`CANDIDATE_SCOPES` with ``scope: auto``) — prunes a copy of
the trained dense model to the recipe's target, recovers as the recipe does but on a small
subset of the data, and is scored on rows held out of the training split. The best one is
what the run uses; the table goes into the manifest (``pruning.selection``).

- **Held out of the training split**, not the validation split: the validation split reports
  the final accuracy, and it must not have chosen the model it judges.
- **A trial is the run in small**: the recipe's own recovery rounds and final finetune, but
  each epoch is a pass over the same small subset of the rest of the training split. A trial
  that gave every candidate the same few passes would favour one shot (all of its passes
  come after its one cut; an iterative candidate's last cut would get one short pass),
  unlike the run, where every cut gets the recipe's recovery.
- **The budget**: the subset is sized so that all trials together train on at most
  :data:`TRIAL_SHARE` of the batches the run trains on (dense training, recovery, finetune).
- **The prior** (:mod:`pruning.advice`'s thresholds) only orders the candidates; it breaks
  ties, it does not decide.

:func:`candidates` and :func:`trial_budget` are pure; :func:`select` runs the trials.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.advice import ITERATIVE_ABOVE, removed_fraction
from pruneguard.pruning.errors import TargetUnreachable
from pruneguard.pruning.progress import reporter
from pruneguard.pruning.recipe import Recipe, Schedule
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from pruneguard.pruning.pipeline import Prepared

__all__ = [
    "CANDIDATE_CRITERIA",
    "CANDIDATE_SCOPES",
    "TRIAL_SHARE",
    "Budget",
    "Selection",
    "Trial",
    "candidates",
    "select",
    "trial_budget",
]

CANDIDATE_CRITERIA = ("taylor", "l2")  # gradient-based and weight-based; both cheap to score
# the same share of every group (Torch-Pruning's default), then widths from one ranking of
# all channels: on the zoo at 85% fewer MACs each was the better one on some nets
CANDIDATE_SCOPES = ("layer", "global")
TRIAL_SHARE = 0.25  # at most this share of the run's training batches
HOLDOUT_SHARE = 0.2  # of the training split, scores the trials
MIN_BATCHES = 2  # a trial pass never has fewer batches than this
DEFAULT_STEPS = 4  # the iterative candidate's steps when the recipe names none


@dataclass(frozen=True)
class Trial:
    criterion: str
    schedule: str
    steps: int
    scope: str  # layer (the same share of every group) or global (widths from one ranking)
    epochs: int  # of training after the first cut: recovery rounds + final finetune
    accuracy: float | None  # on the holdout of the training split; None: target unreachable
    seconds: float
    note: str | None = None  # why a candidate did not run


@dataclass(frozen=True)
class Budget:
    batches_per_pass: int  # the trial subset: one "epoch" of a trial
    passes: int  # over all candidates: their recovery rounds + final finetunes
    run_batches: int  # the run's own training batches: dense training + recovery + finetune

    @property
    def share(self) -> float:
        """The trials' training batches over the run's."""
        return self.passes * self.batches_per_pass / max(self.run_batches, 1)


@dataclass(frozen=True)
class Selection:
    criterion: str
    schedule: Schedule
    scope: str
    trials: tuple[Trial, ...]  # in prior order
    prior: str
    budget: Budget
    holdout_rows: int
    split: str
    seconds: float

    def as_dict(self, requested: Recipe, chosen: Recipe) -> dict[str, Any]:
        """JSON-able, for the manifest's ``pruning.selection``."""
        n = len(self.trials)
        return {
            "requested": {
                "criterion": requested.criterion,
                "schedule": requested.schedule.kind,
                "scope": requested.scope or "layer",
            },
            "chosen": {
                "criterion": self.criterion,
                "schedule": asdict(self.schedule),
                "scope": self.scope,
                "finetune": asdict(chosen.finetune),
            },
            "prior": self.prior,
            "trials": [asdict(t) for t in self.trials],
            "evaluated_on": {"split": self.split, "rows": self.holdout_rows},
            "budget": {
                **asdict(self.budget),
                "candidates": n,
                "share_of_run": round(self.budget.share, 4),
            },
            "seconds": round(self.seconds, 2),
        }


def candidates(recipe: Recipe) -> tuple[list[Recipe], str]:
    """The recipes to try (each a concrete criterion and schedule), in prior order, and the
    prior in words. With ``schedule: auto`` the one-shot candidate trains as long as the
    iterative one, all of it after its one cut (what Torch-Pruning's default does)."""
    criteria = CANDIDATE_CRITERIA if recipe.criterion == "auto" else (recipe.criterion,)
    steps = recipe.schedule.steps if recipe.schedule.steps > 1 else DEFAULT_STEPS
    iterative = replace(recipe, schedule=Schedule("iterative", steps))
    if recipe.schedule.kind != "auto":
        schedules = [recipe]
        prior = f"schedule {recipe.schedule.kind} as the recipe says"
    else:
        matched = replace(recipe.finetune, epochs=_passes(iterative))
        one_shot = replace(recipe, schedule=Schedule("one-shot", 1), finetune=matched)
        removed = removed_fraction(recipe.target)
        heavy = removed is not None and removed > ITERATIVE_ABOVE
        schedules = [iterative, one_shot] if heavy else [one_shot, iterative]
        about = "an unknown share" if removed is None else f"about {removed:.0%}"
        prior = (
            f"removing {about} ({'over' if heavy else 'not over'} {ITERATIVE_ABOVE:.0%}): "
            f"{schedules[0].schedule.kind} first"
        )
    scopes = CANDIDATE_SCOPES if recipe.scope == "auto" else (recipe.scope,)
    found = [
        replace(r, criterion=c, scope=sc, quantize=None)
        for r in schedules
        for sc in scopes
        for c in criteria
    ]
    return found, (
        f"{prior}; criteria in the order {', '.join(criteria)}"
        + (f"; scopes in the order {', '.join(CANDIDATE_SCOPES)}" if len(scopes) > 1 else "")
        + "; ties go to the first"
    )


def _named(recipe: Recipe) -> str:
    s = recipe.schedule
    return f"{recipe.criterion}, {s.kind} × {s.steps}, scope {recipe.scope or 'layer'}"


def _passes(recipe: Recipe) -> int:
    """A recipe's training after its first cut, in epochs: recovery rounds + final finetune."""
    ft = recipe.finetune
    return ft.epochs + ft.recovery_epochs * (recipe.schedule.steps - 1)


def trial_budget(recipe: Recipe, train_batches: int, fit_batches: int) -> Budget:
    """The trial subset's size: all candidates' passes within :data:`TRIAL_SHARE` of the run."""
    tried, _ = candidates(recipe)
    passes = sum(max(_passes(c), 1) for c in tried)
    dense = recipe.train.epochs if recipe.train else 0
    run_batches = max(dense + max(_passes(c) for c in tried), 1) * train_batches
    per_pass = math.floor(TRIAL_SHARE * run_batches / passes)
    return Budget(max(MIN_BATCHES, min(per_pass, fit_batches)), passes, run_batches)


def select(prep: Prepared, *, progress: bool = True) -> tuple[Prepared, dict[str, Any]]:
    """Run the trials; ``prep`` with the chosen recipe, and the manifest's selection record."""
    from pruneguard.pruning.pipeline import evaluate, prune_copy

    recipe, say = prep.recipe, reporter(progress)
    try:
        train_batches = len(prep.data["train"])
    except TypeError:
        raise ConfigError(
            "criterion/schedule auto sizes its trial from the training loader's length, and this "
            "one has none (an iterable dataset). Fix: give the DataLoader a map-style dataset, "
            "or set criterion and schedule.kind explicitly."
        ) from None
    fit, holdout, split = _split(prep.data, recipe.seed)
    trying, narrowed = _within_budget(recipe, train_batches, len(fit))
    tried, prior = candidates(trying)
    budget = trial_budget(trying, train_batches, len(fit))
    if narrowed:
        prior += f"; {narrowed}"
        say(narrowed)
    subset = _first_batches(fit, budget.batches_per_pass)
    # its own amounts: a global ranking scored on the trial's batches is not the run's
    trial_prep = replace(prep, data={"train": subset, "val": holdout}, amounts=dict(prep.amounts))
    what = "criterion/schedule/scope" if trying.scope == "auto" else "criterion/schedule"
    say(f"choosing the {what}: {len(tried)} trials, the recipe's finetune in passes of "
        f"{budget.batches_per_pass} batches, scored on {split}")  # fmt: skip
    started, trials = time.perf_counter(), []
    unreachable: list[TargetUnreachable] = []
    for i, candidate in enumerate(tried):
        t0, sched = time.perf_counter(), candidate.schedule
        acc: float | None
        note: str | None
        try:
            model = prune_copy(trial_prep, candidate, progress=False)
        except TargetUnreachable as exc:  # e.g. a global ranking's widths cannot get there
            unreachable.append(exc)
            acc, note = None, str(exc)
            say(f"trial {i + 1}/{len(tried)}: {_named(candidate)}: target unreachable")
        else:
            acc, note = evaluate(model, holdout, prep.example).accuracy, None
            say(f"trial {i + 1}/{len(tried)}: {_named(candidate)}: holdout accuracy {acc:.4f}")
        trials.append(Trial(candidate.criterion, sched.kind, sched.steps,
                            candidate.scope or "layer", _passes(candidate), acc,
                            time.perf_counter() - t0, note))  # fmt: skip
    reached = [k for k, t in enumerate(trials) if t.accuracy is not None]
    if not reached:
        raise unreachable[0]
    best = tried[max(reached, key=lambda k: (trials[k].accuracy or 0.0, -k))]
    say(f"chose {_named(best)}")
    rows = sum(len(y) for _, y in holdout)
    result = Selection(best.criterion, best.schedule, best.scope or "layer", tuple(trials), prior,
                       budget, rows, split, time.perf_counter() - started)  # fmt: skip
    chosen = replace(best, quantize=recipe.quantize)
    return replace(prep, recipe=chosen), result.as_dict(recipe, chosen)


def _within_budget(recipe: Recipe, train_batches: int, fit_batches: int) -> tuple[Recipe, str]:
    """The recipe whose candidates fit :data:`TRIAL_SHARE`, and why it is narrower (or "").

    Each candidate needs at least :data:`MIN_BATCHES` per pass; on a small training set the
    8 candidates of ``scope: auto`` cannot all fit, and only the layer scope is tried."""
    if recipe.scope != "auto":
        return recipe, ""
    share = trial_budget(recipe, train_batches, fit_batches).share
    if share <= TRIAL_SHARE:
        return recipe, ""
    return replace(recipe, scope=None), (
        f"scope: layer only: trying both scopes would train on {share:.0%} of the run's batches, "
        f"over the trial's {TRIAL_SHARE:.0%}"
    )


def _split(data: dict[str, DataLoader], seed: int) -> tuple[DataLoader, DataLoader, str]:
    """(fit, holdout, what the holdout is): a seeded share of the training rows held out."""
    import torch
    from torch.utils.data import DataLoader, Subset

    train = data["train"]
    dataset = train.dataset
    if train.batch_size is None or not hasattr(dataset, "__len__") or len(dataset) < 10:
        # a custom sampler or a stream: nothing to hold out; the validation split decides
        return train, data["val"], "the validation split (the training data cannot be split)"
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, int(n * HOLDOUT_SHARE))
    held, rest = Subset(dataset, order[:cut]), Subset(dataset, order[cut:])
    fit = DataLoader(rest, batch_size=train.batch_size, shuffle=True)
    holdout = DataLoader(held, batch_size=max(train.batch_size, 256), shuffle=False)
    return fit, holdout, f"{HOLDOUT_SHARE:.0%} of the training split, held out"


def _first_batches(loader: DataLoader, batches: int) -> DataLoader:
    """A loader over the first ``batches`` batches' rows of ``loader`` (shuffled as it is)."""
    from torch.utils.data import DataLoader, Subset

    if loader.batch_size is None:
        return loader
    rows = min(len(loader.dataset), batches * loader.batch_size)  # type: ignore[arg-type]
    return DataLoader(Subset(loader.dataset, range(rows)), batch_size=loader.batch_size,
                      shuffle=True)  # fmt: skip
