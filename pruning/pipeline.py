"""The pruning workflow of a recipe: dense baseline → prune on a schedule → finetune → accept
check → ONNX export → parity → int8 (when the recipe quantizes) → latency → ``OUT/dense``,
``OUT/pruned`` (and ``OUT/quantized``) artifacts.

:func:`run` is the one entry for every task: a front half per kind of input (tensors here,
texts in :mod:`pruning.transformer`) gives the dense and pruned models with the task's
export spec, and :func:`pruning.artifacts.write_run` does the rest for all of them. The
tensor stages are separate functions (:func:`prepare`, :func:`prune_copy`, :func:`evaluate`)
so ``sweep`` can reuse one trained dense model for many variants. Nothing appears in ``OUT``
until every artifact is complete: they are built in a staging folder next to it and renamed
into place together.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.artifacts import Graphs, RunRecord, Side
from pruneguard.pruning.progress import reporter
from pruneguard.pruning.recipe import SPARSE_METHODS, Recipe
from pruneguard.pruning.staging import check_out
from pruneguard.pruning.tasks.tensor_classification import (
    Evaluation,
    TensorClassifier,
    evaluate,
    in_order,
)
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

__all__ = ["Evaluation", "Prepared", "evaluate", "prepare", "prune_copy", "run"]

CALIBRATION_BATCHES = 4


@dataclass
class Prepared:
    """A trained dense model, its frozen teacher copy, the data and the baseline numbers."""

    recipe: Recipe
    model: nn.Module
    teacher: nn.Module
    data: dict[str, DataLoader]
    example: torch.Tensor
    baseline: Evaluation
    # what the pruner takes (channel ratio resolved from a MAC target, sparsity...), for every
    # recipe resolved so far, by what it depends on (:func:`_resolution`)
    amounts: dict[tuple[Any, ...], float]
    # how ``criterion/schedule/scope: auto`` were chosen (pruning/selection.py); None if not asked
    selection: dict[str, Any] | None = None

    @property
    def amount(self) -> float:
        """What the pruner takes for ``recipe`` (resolved by :func:`prune_copy` at the latest)."""
        return self.amounts[_resolution(self.recipe)]

    @property
    def adapter(self) -> TensorClassifier:
        """The task's data, evaluation, recovery loss and export spec (derived from recipe)."""
        return TensorClassifier(self.recipe)


def _context(recipe: Recipe, data: dict[str, DataLoader], example: torch.Tensor) -> Any:
    import itertools

    import torch.nn.functional as F

    from pruneguard.pruning.methods import PruneContext

    calibration = list(itertools.islice(iter(in_order(data["train"])), CALIBRATION_BATCHES))
    return PruneContext(example_inputs=example, calibration=calibration, loss_fn=F.cross_entropy)


def prepare(recipe: Recipe, *, progress: bool = True) -> Prepared:
    """Load data and model, train the dense model if asked, resolve the target, measure it;
    choose the criterion/schedule/scope by trial where the recipe says ``auto``."""
    import torch

    from pruneguard.pruning.finetune import train
    from pruneguard.pruning.schedule import resolve_amount

    say = reporter(progress)
    torch.manual_seed(recipe.seed)
    adapter = TensorClassifier(recipe)
    data, model = adapter.load()
    example = _example(recipe, data["val"], model)
    if recipe.train is not None and recipe.train.epochs > 0:
        say(f"training the dense model: {recipe.train.epochs} epochs")
        train(model, data["train"], epochs=recipe.train.epochs, lr=recipe.train.lr,
              loss=adapter.distill_loss, progress=progress, seed=recipe.seed,
              desc="train dense")  # fmt: skip
    model.eval()
    # after training: a global ranking's widths depend on the trained weights. Until a trial
    # has chosen a criterion there is no ranking: the uniform amount stands in
    basis = recipe if _resolution(recipe)[-1] != "auto" else replace(recipe, scope=None)
    amount = resolve_amount(basis, model, _context(recipe, data, example))
    if recipe.target.kind == "macs_reduction":
        say(f"macs_reduction {recipe.target.value:g} → channel ratio {amount:.3f}")
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    baseline = adapter.evaluate(model, data["val"], example)
    say(f"dense: accuracy {baseline.accuracy:.4f}, {baseline.params} params, {baseline.macs} MACs")
    prep = Prepared(recipe, model, teacher, data, example, baseline, {_resolution(basis): amount})
    if recipe.selects:
        from pruneguard.pruning.selection import select

        prep, record = select(prep, progress=progress)
        prep.selection = record
    return prep


def _example(recipe: Recipe, loader: DataLoader, model: nn.Module) -> torch.Tensor:
    """One input row from the data (so ``model.input_shape`` may be left out); the model must
    take it."""
    import torch

    x, _ = next(iter(loader))
    expected = recipe.model.input_shape
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ConfigError(
            f"model.input_shape={list(expected)} but the data yields inputs of shape "
            f"{list(x.shape[1:])}; fix input_shape or the data factory"
        )
    example = x[:1].clone()
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as exc:
        where = "model.input_shape" if expected is not None else "the data's first batch"
        raise ConfigError(
            f"the model's forward fails on an input of shape {list(example.shape)} (batch 1, "
            f"shape from {where}): {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; "
            "fix: make the data yield what the model takes, or the model take what the data yields"
        ) from exc
    finally:
        model.train(was_training)
    return example


def prune_copy(
    prep: Prepared,
    recipe: Recipe | None = None,
    *,
    progress: bool = True,
    safety: list[dict[str, Any]] | None = None,
) -> nn.Module:
    """A pruned and finetuned copy of the dense model, following ``recipe`` (default: prep's).

    ``recipe`` may differ from ``prep.recipe`` in method, criterion, target and schedule (a
    sweep variant); its amount is resolved again when its target differs. An iterative
    channel schedule runs with the safety net (:func:`pruning.schedule.run_schedule`); what
    it saw is appended to ``safety`` when given.
    """

    from pruneguard.pruning.finetune import train
    from pruneguard.pruning.methods import build_pruner, with_widths
    from pruneguard.pruning.methods.masks import remove_masks
    from pruneguard.pruning.recipe import Schedule
    from pruneguard.pruning.schedule import resolve_amount, run_schedule

    recipe = recipe or prep.recipe
    say = reporter(progress)
    ctx = _context(recipe, prep.data, prep.example)
    key = _resolution(recipe)
    if key not in prep.amounts:  # a global ranking's search is dozens of scorings: once each
        prep.amounts[key] = resolve_amount(recipe, prep.model, ctx)
    amount = prep.amounts[key]
    ctx = with_widths(recipe, prep.model, amount, ctx)
    teacher = prep.teacher if recipe.finetune.distill else None
    ft = recipe.finetune

    def make(m: nn.Module, criterion: str | None, ratio: float | None, steps: int) -> Any:
        r = recipe if criterion is None else replace(
            recipe, criterion=criterion, schedule=Schedule("iterative", steps))  # fmt: skip
        return build_pruner(r, m, amount if ratio is None else ratio, ctx)

    def recover(m: nn.Module, step: int, steps: int) -> None:
        say(f"step {step + 1}/{steps} pruned; recovery finetune {ft.recovery_epochs} epochs")
        train(m, prep.data["train"], epochs=ft.recovery_epochs, lr=ft.lr, teacher=teacher,
              loss=prep.adapter.distill_loss, progress=progress, seed=recipe.seed + step + 1,
              desc=f"recovery {step + 1}/{steps}")  # fmt: skip

    say(
        f"pruning: {recipe.method} / {recipe.criterion}, {recipe.schedule.kind} × {recipe.schedule.steps}"
    )
    guarded = recipe.method == "channel" and recipe.schedule.steps > 1
    model, pruner, records = run_schedule(
        copy.deepcopy(prep.model), make, ratio=amount, criterion=recipe.criterion,
        steps=recipe.schedule.steps, recover=recover, say=say,
        guard=_guard(ctx, prep.model) if guarded else None,
    )  # fmt: skip
    if safety is not None:
        safety.extend(records)
    if ft.epochs:
        say(f"final finetune: {ft.epochs} epochs{' (distilled)' if teacher else ''}")
        train(model, prep.data["train"], epochs=ft.epochs, lr=ft.lr, teacher=teacher,
              loss=prep.adapter.distill_loss, progress=progress, seed=recipe.seed + 1000,
              desc="final finetune")  # fmt: skip
    pruner.finish()
    remove_masks(model)  # bake any unstructured masks into plain weights; no-op otherwise
    return model.eval()


def _resolution(recipe: Recipe) -> tuple[Any, ...]:
    """What a recipe's amount depends on: two recipes that agree here share it (the last item
    is the criterion of a global ranking, ``auto`` before a trial chose one, else None)."""
    if recipe.scope in ("global", "auto"):
        ranked_by = "auto" if "auto" in (recipe.scope, recipe.criterion) else recipe.criterion
    else:
        ranked_by = None
    return recipe.target, recipe.round_to, ranked_by


def _guard(ctx: Any, dense: nn.Module) -> Any:
    """The safety net's rows: the calibration batches (training rows, in order)."""
    from pruneguard.pruning.finetune import accuracy
    from pruneguard.pruning.schedule import Guard

    rows = list(ctx.calibration)
    return Guard(accuracy=lambda m: accuracy(m, rows), baseline=accuracy(dense, rows))


def run(
    recipe: Recipe, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``recipe`` end to end; write ``out_dir/dense`` and ``out_dir/pruned`` (and
    ``out_dir/quantized``); return the dense and pruned manifests.

    Text recipes (an encoder: ``task: embedding``, ``model.hf``, labelled text data) prune in
    :func:`pruning.transformer.prune_text`, decoders (``task: causal-lm``) in
    :func:`pruning.llm.prune_causal_lm`; every front half ends in
    :func:`pruning.artifacts.write_run`.
    """
    from pruneguard.pruning.artifacts import write_run

    out = Path(out_dir)
    check_out(out)
    graphs: Graphs
    if recipe.is_decoder:
        from pruneguard.pruning.llm import prune_causal_lm

        graphs, dense, pruned, record = prune_causal_lm(recipe, progress=progress)
        say = reporter(progress, "llm")
    elif recipe.is_text:
        from pruneguard.pruning.transformer import prune_text

        graphs, dense, pruned, record = prune_text(recipe, progress=progress)
        say = reporter(progress, "text")
    else:
        graphs, dense, pruned, record = _prune_tensor(recipe, progress)
        say = reporter(progress)
    manifests = write_run(out, recipe, graphs, dense, pruned, record, progress=progress, say=say)
    return manifests[0], manifests[1]


def _prune_tensor(recipe: Recipe, progress: bool) -> tuple[Any, Side, Side, RunRecord]:
    """The front half for a tensor classifier: dense model, pruned copy, what the run did."""
    from pruneguard.pruning.methods.masks import sparsity_report

    say = reporter(progress)
    prep = prepare(recipe, progress=progress)
    safety: list[dict[str, Any]] = []
    model = prune_copy(prep, progress=progress, safety=safety)
    pruned = prep.adapter.evaluate(model, prep.data["val"], prep.example)
    say(f"pruned: accuracy {pruned.accuracy:.4f}, {pruned.params} params, {pruned.macs} MACs")
    sparse = {}
    if recipe.method in SPARSE_METHODS:
        report = sparsity_report(model)
        sparse = {k: report[k] for k in ("sparsity", "weight_sparsity")}
    base = prep.baseline
    n_outputs = int(prep.model(prep.example).shape[1])
    graphs = prep.adapter.graphs(base, prep.example, n_outputs, prep.data["train"])
    return (
        graphs,
        Side(prep.model, base, base.params, base.macs),
        Side(model, pruned, pruned.params, pruned.macs, sparse),
        _record(prep, safety),
    )


def _record(prep: Prepared, safety: list[dict[str, Any]]) -> RunRecord:
    """The pruning section (with the safety net's and the trial's tables), notes, source."""
    from pruneguard.pruning.manifest import selection_note

    recipe = prep.recipe
    notes: list[str] = []
    if recipe.data.builtin == "synthetic":
        notes.append("Data is synthetic (random images, random labels): accuracy is "
                     "meaningless; this artifact is for latency.")  # fmt: skip
    pruned_notes: list[str] = []
    pruning: dict[str, Any] = {**recipe.pruning_section(), "resolved_amount": prep.amount}
    distillation = prep.adapter.distillation()
    if distillation is not None:
        pruning["distillation"] = distillation
    if safety:
        from pruneguard.pruning.schedule import SAFETY_DROP

        pruning["safety_net"] = {"max_drop": SAFETY_DROP, "rows": "the calibration batches",
                                 "steps": [dict(r) for r in safety]}  # fmt: skip
        pruned_notes += [f"safety net: step {r['step']} {r['action']}" for r in safety
                         if "action" in r]  # fmt: skip
    if prep.selection is not None:
        pruning["selection"] = prep.selection
        pruned_notes.append(selection_note(prep.selection))
    train = recipe.train
    source = {
        "recipe": recipe.source, "model": recipe.model.builtin or recipe.model.factory,
        "data": recipe.data.builtin or recipe.data.factory, "seed": recipe.seed,
        "train": {"epochs": train.epochs, "lr": train.lr} if train else None,
    }  # fmt: skip
    return RunRecord(pruning, notes, pruned_notes, source)
