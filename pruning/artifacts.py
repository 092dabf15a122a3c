"""The second half of every run, whatever the task: each model's ONNX graph with its parity
to torch, the int8 graph when the recipe quantizes, latency of all graphs side by side as
served, and the manifests; the artifacts ``dense/``, ``pruned/`` (and ``quantized/``) are
written together into ``OUT`` (:mod:`pruning.staging`).

What differs per task comes from its adapter's :class:`Graphs` (how a model is exported and
fed, how a graph is judged, what an artifact carries beside its graph); what differs per
front half (the pruning report, notes, source) comes in a :class:`RunRecord`.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pruneguard.pruning.progress import steps
from pruneguard.pruning.recipe import SPARSE_METHODS
from pruneguard.pruning.staging import staged_pair

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from pruneguard.pruning.recipe import Recipe

__all__ = [
    "Graphs", "OnnxMeasure", "RunRecord", "Side", "measure_onnx", "time_graphs", "time_recipe",
    "write_run",
]  # fmt: skip


@dataclass(frozen=True)
class Side:
    """One model of a run and what was measured of it in torch."""

    model: nn.Module
    evaluation: Any  # the task's evaluation: .accuracy, .predictions, .labels
    params: int
    macs: int
    extra: Mapping[str, Any] = field(default_factory=dict)  # the task's own metrics


@dataclass(frozen=True)
class RunRecord:
    """What the front half says about the run: ``pruning`` (the recipe's section and what the
    pruner reported), notes on both artifacts, notes on the pruned one only, and the source."""

    pruning: Mapping[str, Any]
    notes: Sequence[str] = ()
    pruned_notes: Sequence[str] = ()
    source: Mapping[str, Any] = field(default_factory=dict)


class Graphs(Protocol):
    """A task adapter's export spec: its models' graphs, their feeds, and an artifact's files."""

    def export(self, model: nn.Module, path: Path, opset: int) -> None: ...

    def parity(self, model: nn.Module, path: Path) -> float:
        """Max |torch − ONNX Runtime| of the graph at ``path`` on the task's rows."""
        ...

    def time(
        self, paths: Mapping[str, Path], recipe: Recipe, progress: bool
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Each graph's latency as served, side by side: label → batch → p50/p95/..."""
        ...

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]: ...

    def evaluate_graph(self, path: Path, threads: int | None) -> tuple[Any, np.ndarray]:
        """A graph judged as the torch models are: (evaluation, raw outputs on the rows)."""
        ...

    def quality(self, evaluation: Any, dense: Any) -> dict[str, Any]:
        """The task's figures for a model against dense (validation rows, cosine...)."""
        ...

    def io(self) -> dict[str, Any]: ...

    def reference(self, evaluation: Any) -> pd.DataFrame: ...

    def save_files(self, folder: Path, label: str) -> None:
        """What the artifact of ``label`` holds beside graph, reference and manifest (a
        tokenizer, a transformers folder...)."""
        ...


@dataclass(frozen=True)
class OnnxMeasure:
    parity: dict[str, float]  # label -> max |torch - ORT|
    onnx_bytes: dict[str, int]
    latency: dict[str, dict[str, dict[str, float]]]  # label -> batch -> p50/p95/mean/runs
    gzip_bytes: dict[str, int]  # label -> gzip size (sparse methods only: zeros compress)
    quantization: dict[str, Any] | None = None  # how quantized.onnx was made (pruning/quantize.py)


def measure_onnx(
    graphs: Graphs,
    models: Mapping[str, nn.Module],
    folder: Path,
    recipe: Recipe,
    progress: bool = False,
) -> OnnxMeasure:
    """Export each model to ``folder/<label>.onnx``; parity on the task's rows; with
    ``recipe.quantize``, ``folder/quantized.onnx`` from the pruned graph; latency of them all
    side by side, in blocks."""
    paths = {label: folder / f"{label}.onnx" for label in models}
    diffs = {}
    with steps(len(models), "export", enabled=progress) as done:
        for label, model in models.items():
            graphs.export(model, paths[label], recipe.export.opset)
            diffs[label] = graphs.parity(model, paths[label])
            done.advance(f"{label}: parity {diffs[label]:.1e}")
    record = None
    if recipe.quantize is not None:
        from pruneguard.pruning.quantize import quantize_onnx

        paths["quantized"] = folder / "quantized.onnx"
        record = quantize_onnx(paths["pruned"], paths["quantized"], recipe.quantize,
                               calibration=graphs.calibration_feeds())  # fmt: skip
    latency = graphs.time(paths, recipe, progress)
    sizes = {label: path.stat().st_size for label, path in paths.items()}
    gz = {}
    if recipe.method in SPARSE_METHODS:  # zeros compress: gzip sizes are measured
        gz = {label: len(gzip.compress(path.read_bytes(), 6)) for label, path in paths.items()}
    return OnnxMeasure(diffs, sizes, latency, gz, record)


def time_recipe(
    paths: Mapping[str, Path],
    feeds: Callable[[int], dict[str, np.ndarray]],
    recipe: Recipe,
    progress: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`time_graphs` on every batch size with the recipe's blocks, runs and threads."""
    e = recipe.export
    return time_graphs(paths, feeds, batch_sizes=e.batch_sizes, blocks=e.latency_blocks,
                       runs=e.latency_runs, threads=e.ort_threads, progress=progress)  # fmt: skip


def time_graphs(
    paths: Mapping[str, Path],
    feeds: Callable[[int], dict[str, np.ndarray]],
    *,
    batch_sizes: Sequence[int],
    blocks: int,
    runs: int,
    threads: int | None,
    progress: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """p50/p95/mean of each graph per batch size (str), timed side by side as served: the
    graphs alternate in blocks of ``runs`` (:func:`pruning.latency.compare_latency`)."""
    from pruneguard.pruning.latency import compare_latency, make_session

    sessions = {label: make_session(path, threads) for label, path in paths.items()}
    latency: dict[str, dict[str, dict[str, float]]] = {label: {} for label in paths}
    with steps(len(batch_sizes), "latency", enabled=progress) as done:
        for batch in batch_sizes:
            stats = compare_latency(sessions, feeds(batch), blocks=blocks, runs_per_block=runs)
            for label, s in stats.items():
                latency[label][str(batch)] = s.as_dict()
            done.advance(f"batch {batch}")
    return latency


def write_run(
    out: Path,
    recipe: Recipe,
    graphs: Graphs,
    dense: Side,
    pruned: Side,
    record: RunRecord,
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """Export, measure and write the run's artifacts into ``out``; return their manifests
    (dense, pruned[, quantized])."""
    with staged_pair(out) as staging:
        say("exporting to ONNX; measuring parity and latency")
        models = {"dense": dense.model, "pruned": pruned.model}
        onnx = measure_onnx(graphs, models, staging, recipe, progress)
        manifests = _write(staging, recipe, graphs, dense, pruned, onnx, record)
    say(f"wrote {', '.join(str(out / m['kind']) for m in manifests)}")
    return manifests


def _write(
    staging: Path, recipe: Recipe, graphs: Graphs, dense: Side, pruned: Side,
    onnx: OnnxMeasure, record: RunRecord,
) -> list[dict[str, Any]]:  # fmt: skip
    from pruneguard.pruning.manifest import dense_manifest, pruned_manifest
    from pruneguard.registry.artifact import sha256_file, write_artifact

    parent = {"sha256": sha256_file(staging / "dense.onnx"), "tag": None}
    io = graphs.io()
    dm = dense_manifest(recipe, dense, graphs.quality(dense.evaluation, dense.evaluation),
                        onnx, io=io, record=record)  # fmt: skip
    pm = pruned_manifest(recipe, dense, pruned, graphs.quality(pruned.evaluation, dense.evaluation),
                         onnx, io=io, record=record, parent=parent)  # fmt: skip
    written = [
        write_artifact(staging / "dense", dm, _files(staging, "dense", dense.evaluation, graphs)),
        write_artifact(
            staging / "pruned", pm, _files(staging, "pruned", pruned.evaluation, graphs)
        ),
    ]
    if onnx.quantization is not None:
        int8, qm = _int8(staging, recipe, graphs, dense, pm, onnx)
        written.append(
            write_artifact(staging / "quantized", qm, _files(staging, "quantized", int8, graphs))
        )
    return written


def _int8(
    staging: Path, recipe: Recipe, graphs: Graphs, dense: Side, pm: dict[str, Any],
    onnx: OnnxMeasure,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """The int8 graph and its fp32 parent graph, each judged once on the held-out rows: the
    int8 evaluation and its manifest (outputs compared with the parent's in the task's terms)."""
    from pruneguard.pruning.manifest import quantized_manifest
    from pruneguard.pruning.quantize import parent_parity
    from pruneguard.registry.artifact import sha256_file

    assert onnx.quantization is not None
    threads = recipe.export.ort_threads
    int8, int8_out = graphs.evaluate_graph(staging / "quantized.onnx", threads)
    _, fp32_out = graphs.evaluate_graph(staging / "pruned.onnx", threads)
    base = dense.evaluation
    quality = {
        "accuracy": int8.accuracy,
        **graphs.quality(int8, base),
        "agreement_with_baseline": float((int8.predictions == base.predictions).mean()),
    }
    manifest = quantized_manifest(
        pm, {"sha256": sha256_file(staging / "pruned.onnx"), "tag": None}, recipe=recipe,
        quality=quality, latency=onnx.latency, onnx_bytes=onnx.onnx_bytes["quantized"],
        parity=parent_parity(pm, int8_out, fp32_out), quantization=onnx.quantization,
    )  # fmt: skip
    return int8, manifest


def _files(staging: Path, label: str, evaluation: Any, graphs: Graphs) -> Callable[[Path], None]:
    def write_files(tmp: Path) -> None:
        shutil.copyfile(staging / f"{label}.onnx", tmp / "model.onnx")
        graphs.reference(evaluation).to_parquet(tmp / "reference.parquet", index=False)
        graphs.save_files(tmp, label)

    return write_files
