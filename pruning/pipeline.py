"""The pruning workflow of a recipe: dense baseline → prune on a schedule → finetune → accept
check → ONNX export → parity → int8 (when the recipe quantizes) → latency → ``OUT/dense``,
``OUT/pruned`` (and ``OUT/quantized``) artifacts.

The stages are separate functions (:func:`prepare`, :func:`prune_copy`, :func:`evaluate`,
:func:`measure_onnx`) so ``sweep`` can reuse one trained dense model for many variants.
Nothing appears in ``OUT`` until every artifact is complete: they are built in a staging
folder next to it and renamed into place together.
"""

from __future__ import annotations

import copy
import gzip
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.progress import reporter, steps
from pruneguard.pruning.recipe import Recipe
from pruneguard.pruning.staging import check_out, staged_pair
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

__all__ = [
    "Evaluation",
    "OnnxMeasure",
    "Prepared",
    "calibration_feeds",
    "evaluate",
    "measure_onnx",
    "prepare",
    "prune_copy",
    "run",
]

CALIBRATION_BATCHES = 4
REFERENCE_ROWS = 1000
MAX_REFERENCE_FEATURES = 4096
PARITY_ROWS = 64


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    params: int
    macs: int
    inputs: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray


@dataclass
class Prepared:
    """A trained dense model, its frozen teacher copy, the data and the baseline numbers."""

    recipe: Recipe
    model: nn.Module
    teacher: nn.Module
    data: dict[str, DataLoader]
    example: torch.Tensor
    baseline: Evaluation
    amount: float  # what the pruner takes: channel ratio (resolved from a MAC target), sparsity...
    # how ``criterion/schedule: auto`` were chosen (pruning/selection.py); None when not asked
    selection: dict[str, Any] | None = None


def evaluate(model: nn.Module, loader: DataLoader, example: torch.Tensor) -> Evaluation:
    """Held-out accuracy, parameters and per-sample MACs of ``model``."""
    from pruneguard.pruning.finetune import predict
    from pruneguard.pruning.measure import count_macs, count_params

    inputs, labels, predictions = predict(model, loader)
    accuracy = float((labels == predictions).mean()) if len(labels) else 0.0
    return Evaluation(
        accuracy=accuracy,
        params=count_params(model),
        macs=count_macs(model, example),
        inputs=inputs,
        labels=labels,
        predictions=predictions,
    )


def _context(recipe: Recipe, data: dict[str, DataLoader], example: torch.Tensor) -> Any:
    import itertools

    import torch.nn.functional as F

    from pruneguard.pruning.methods import PruneContext

    calibration = list(itertools.islice(iter(_in_order(data["train"])), CALIBRATION_BATCHES))
    return PruneContext(example_inputs=example, calibration=calibration, loss_fn=F.cross_entropy)


def _in_order(loader: DataLoader) -> DataLoader:
    """The same batches without shuffling: calibration must not depend on what ran before."""
    from torch.utils.data import DataLoader

    if loader.batch_size is None:  # a custom batch sampler: use it as it is
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False)


def prepare(recipe: Recipe, *, progress: bool = True) -> Prepared:
    """Load data and model, resolve the target, train the dense model if asked, measure it;
    choose the criterion/schedule by trial where the recipe says ``auto``."""
    import torch

    from pruneguard.pruning.data import load_data
    from pruneguard.pruning.finetune import train
    from pruneguard.pruning.models.load import load_model
    from pruneguard.pruning.schedule import resolve_amount

    say = reporter(progress)
    torch.manual_seed(recipe.seed)
    data = load_data(recipe.data, seed=recipe.seed, search_path=recipe.base_dir)
    model = load_model(recipe.model, seed=recipe.seed, search_path=recipe.base_dir)
    example = _example(recipe, data["val"], model)
    amount = resolve_amount(recipe, model, _context(recipe, data, example))
    if recipe.target.kind == "macs_reduction":
        say(f"macs_reduction {recipe.target.value:g} → channel ratio {amount:.3f}")
    if recipe.train is not None and recipe.train.epochs > 0:
        say(f"training the dense model: {recipe.train.epochs} epochs")
        train(model, data["train"], epochs=recipe.train.epochs, lr=recipe.train.lr,
              progress=progress, seed=recipe.seed, desc="train dense")  # fmt: skip
    model.eval()
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    baseline = evaluate(model, data["val"], example)
    say(f"dense: accuracy {baseline.accuracy:.4f}, {baseline.params} params, {baseline.macs} MACs")
    prep = Prepared(recipe, model, teacher, data, example, baseline, amount)
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
    from dataclasses import replace

    from pruneguard.pruning.finetune import train
    from pruneguard.pruning.methods import build_pruner
    from pruneguard.pruning.methods.masks import remove_masks
    from pruneguard.pruning.recipe import Schedule
    from pruneguard.pruning.schedule import resolve_amount, run_schedule

    recipe = recipe or prep.recipe
    say = reporter(progress)
    ctx = _context(recipe, prep.data, prep.example)
    resolved_as_prep = (recipe.target, recipe.round_to) == (
        prep.recipe.target,
        prep.recipe.round_to,
    )
    amount = prep.amount if resolved_as_prep else resolve_amount(recipe, prep.model, ctx)
    teacher = prep.teacher if recipe.finetune.distill else None
    ft = recipe.finetune

    def make(m: nn.Module, criterion: str | None, ratio: float | None, steps: int) -> Any:
        r = recipe if criterion is None else replace(
            recipe, criterion=criterion, schedule=Schedule("iterative", steps))  # fmt: skip
        return build_pruner(r, m, amount if ratio is None else ratio, ctx)

    def recover(m: nn.Module, step: int, steps: int) -> None:
        say(f"step {step + 1}/{steps} pruned; recovery finetune {ft.recovery_epochs} epochs")
        train(m, prep.data["train"], epochs=ft.recovery_epochs, lr=ft.lr, teacher=teacher,
              progress=progress, seed=recipe.seed + step + 1,
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
              progress=progress, seed=recipe.seed + 1000, desc="final finetune")  # fmt: skip
    pruner.finish()
    remove_masks(model)  # bake any unstructured masks into plain weights; no-op otherwise
    return model.eval()


def _guard(ctx: Any, dense: nn.Module) -> Any:
    """The safety net's rows: the calibration batches (training rows, in order)."""
    from pruneguard.pruning.finetune import accuracy
    from pruneguard.pruning.schedule import Guard

    rows = list(ctx.calibration)
    return Guard(accuracy=lambda m: accuracy(m, rows), baseline=accuracy(dense, rows))


@dataclass(frozen=True)
class OnnxMeasure:
    parity: dict[str, float]  # label -> max |torch - ORT|
    onnx_bytes: dict[str, int]
    latency: dict[str, dict[str, dict[str, float]]]  # label -> batch -> p50/p95/mean/runs
    gzip_bytes: dict[str, int]  # label -> gzip size (sparse methods only: zeros compress)
    quantization: dict[str, Any] | None = None  # how quantized.onnx was made (pruning/quantize.py)


def measure_onnx(
    models: dict[str, nn.Module],
    example: torch.Tensor,
    val_inputs: np.ndarray,
    folder: Path,
    recipe: Recipe,
    progress: bool = False,
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> OnnxMeasure:
    """Export each model to ``folder/<label>.onnx``; parity on validation rows; with
    ``recipe.quantize``, ``folder/quantized.onnx`` from the pruned graph; latency of them all
    side by side, in blocks."""
    import torch

    from pruneguard.pruning.export import export_onnx, parity

    paths = {label: folder / f"{label}.onnx" for label in models}
    rows = torch.from_numpy(val_inputs[:PARITY_ROWS]).float()
    diffs = {}
    with steps(len(models), "export", enabled=progress) as done:
        for label, model in models.items():
            export_onnx(model, example, paths[label], opset=recipe.export.opset)
            diffs[label] = parity(model, paths[label], rows)
            done.advance(f"{label}: parity {diffs[label]:.1e}")
    record = None
    if recipe.quantize is not None:
        from pruneguard.pruning.quantize import quantize_onnx

        paths["quantized"] = folder / "quantized.onnx"
        record = quantize_onnx(paths["pruned"], paths["quantized"], recipe.quantize,
                               calibration=calibration)  # fmt: skip
    latency = _time_onnx(paths, val_inputs, recipe, progress)
    sizes = {label: path.stat().st_size for label, path in paths.items()}
    gz = {}
    if recipe.method in ("unstructured", "nm"):
        gz = {label: len(gzip.compress(path.read_bytes(), 6)) for label, path in paths.items()}
    return OnnxMeasure(diffs, sizes, latency, gz, record)


def _time_onnx(
    paths: Mapping[str, Path], val_inputs: np.ndarray, recipe: Recipe, progress: bool = False
) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p95/mean of each graph per batch size, timed side by side as served."""
    from pruneguard.pruning.latency import compare_latency, make_session

    sessions = {
        label: make_session(path, recipe.export.ort_threads) for label, path in paths.items()
    }
    latency: dict[str, dict[str, dict[str, float]]] = {label: {} for label in paths}
    with steps(len(recipe.export.batch_sizes), "latency", enabled=progress) as done:
        for batch in recipe.export.batch_sizes:
            feed = {"input": _batch_of(val_inputs, batch)}
            stats = compare_latency(
                sessions,
                feed,
                blocks=recipe.export.latency_blocks,
                runs_per_block=recipe.export.latency_runs,
            )
            for label, s in stats.items():
                latency[label][str(batch)] = s.as_dict()
            done.advance(f"batch {batch}")
    return latency


def _batch_of(rows: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(rows))
    return np.concatenate([rows] * reps)[:batch].astype(np.float32)


def run(
    recipe: Recipe, out_dir: str | os.PathLike[str], *, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``recipe`` end to end; write ``out_dir/dense`` and ``out_dir/pruned`` (and
    ``out_dir/quantized``); return the dense and pruned manifests.

    Text recipes (an encoder: ``task: embedding``, ``model.hf``, labelled text data) go to
    :func:`pruning.transformer.run`.
    """
    if recipe.is_text:
        return _run_transformer(recipe, Path(out_dir), progress)
    out = Path(out_dir)
    check_out(out)
    say = reporter(progress)
    prep = prepare(recipe, progress=progress)
    safety: list[dict[str, Any]] = []
    pruned_model = prune_copy(prep, progress=progress, safety=safety)
    pruned = evaluate(pruned_model, prep.data["val"], prep.example)
    say(f"pruned: accuracy {pruned.accuracy:.4f}, {pruned.params} params, {pruned.macs} MACs")
    with staged_pair(out) as staging:
        say("exporting to ONNX; measuring parity and latency")
        onnx = measure_onnx({"dense": prep.model, "pruned": pruned_model}, prep.example,
                            prep.baseline.inputs, staging, recipe, progress,
                            calibration=calibration_feeds(recipe, prep.data))  # fmt: skip
        manifests = _write_all(staging, prep, pruned, pruned_model, onnx, safety)
    say(f"wrote {', '.join(str(out / m['kind']) for m in manifests)}")
    return manifests[0], manifests[1]


def calibration_feeds(recipe: Recipe, data: dict[str, DataLoader]) -> list[dict[str, np.ndarray]]:
    """The first ``quantize.calibration`` training batches, in order (static int8 only)."""
    import itertools

    if recipe.quantize is None or recipe.quantize.mode != "static":
        return []
    batches = itertools.islice(iter(_in_order(data["train"])), recipe.quantize.calibration)
    return [{"input": x.numpy().astype(np.float32)} for x, _ in batches]


def _run_transformer(
    recipe: Recipe, out: Path, progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    from pruneguard.pruning.transformer import run as run_transformer

    check_out(out)
    return run_transformer(recipe, out, progress=progress)


def _write_all(
    staging: Path,
    prep: Prepared,
    pruned: Evaluation,
    pruned_model: nn.Module,
    onnx: OnnxMeasure,
    safety: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Write dense/, pruned/ and (when the recipe quantizes) quantized/ into ``staging``."""
    from pruneguard.pruning.manifest import dense_manifest, pruned_manifest, reference_frame
    from pruneguard.registry.artifact import sha256_file, write_artifact

    def writer(label: str, evaluation: Evaluation) -> Callable[[Path], None]:
        def write_files(tmp: Path) -> None:
            shutil.copyfile(staging / f"{label}.onnx", tmp / "model.onnx")
            reference_frame(evaluation).to_parquet(tmp / "reference.parquet", index=False)

        return write_files

    parent = {"sha256": sha256_file(staging / "dense.onnx"), "tag": None}
    dense = write_artifact(
        staging / "dense", dense_manifest(prep, onnx), writer("dense", prep.baseline)
    )
    pm = pruned_manifest(prep, pruned, pruned_model, onnx, parent, safety=safety)
    written = [dense, write_artifact(staging / "pruned", pm, writer("pruned", pruned))]
    if onnx.quantization is not None:
        int8, qm = _int8_side(staging, prep, pruned, pm, onnx)
        written.append(write_artifact(staging / "quantized", qm, writer("quantized", int8)))
    return written


def _int8_side(
    staging: Path, prep: Prepared, pruned: Evaluation, pm: dict[str, Any], onnx: OnnxMeasure
) -> tuple[Evaluation, dict[str, Any]]:
    """The int8 graph and its fp32 parent graph, each run once over the validation rows: the
    int8 evaluation (argmax, as :func:`evaluate` does) and the int8 manifest."""
    from pruneguard.pruning.manifest import quantized_manifest
    from pruneguard.pruning.quantize import onnx_outputs, parent_parity
    from pruneguard.registry.artifact import sha256_file

    assert onnx.quantization is not None
    base = prep.baseline
    rows = base.inputs.astype(np.float32)
    threads = prep.recipe.export.ort_threads
    outputs = {side: onnx_outputs(staging / f"{side}.onnx", {"input": rows}, threads)
               for side in ("pruned", "quantized")}  # fmt: skip
    predictions = outputs["quantized"].argmax(axis=1)
    accuracy = float((base.labels == predictions).mean()) if len(base.labels) else 0.0
    int8 = Evaluation(accuracy, pruned.params, pruned.macs, base.inputs, base.labels, predictions)
    quality = {
        "accuracy": accuracy,
        "agreement_with_baseline": float((predictions == base.predictions).mean()),
        "validation_rows": len(base.labels),
    }
    manifest = quantized_manifest(
        pm, {"sha256": sha256_file(staging / "pruned.onnx"), "tag": None}, recipe=prep.recipe,
        quality=quality, latency=onnx.latency, onnx_bytes=onnx.onnx_bytes["quantized"],
        parity=parent_parity(pm, outputs["quantized"], outputs["pruned"]),
        quantization=onnx.quantization,
    )  # fmt: skip
    return int8, manifest
