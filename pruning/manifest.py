"""Building the manifest dict of an artifact (DESIGN §3.2); ``registry.artifact`` writes it.

Pure functions of measured numbers: nothing here runs a model. ``files`` is added by
``registry.artifact.write_artifact`` from the files it writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pruneguard.pruning.recipe import SPARSE_METHODS, Recipe
from pruneguard.registry.artifact import REQUIRED_METRICS, SCHEMA

if TYPE_CHECKING:
    from pruneguard.pruning.artifacts import OnnxMeasure, RunRecord, Side

__all__ = [
    "CPU_SPARSITY_NOTE",
    "build_manifest",
    "dense_manifest",
    "io_spec",
    "latency_metrics",
    "pruned_manifest",
    "quantized_manifest",
    "selection_note",
    "side_metrics",
    "versions",
]

CPU_SPARSITY_NOTE = (
    "Unstructured/N:M sparsity: ONNX Runtime on CPU multiplies the zeros like any other weight, "
    "so latency does not improve (measured speed-up {speedups}); the gain is size after "
    "compression ({gz} vs {base_gz} gzip bytes). Real speed needs sparse kernels, e.g. 2:4 "
    "sparse tensor cores on NVIDIA Ampere or newer GPUs, or structured (channel) pruning."
)


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shaped the artifact."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    dists = ("torch", "onnx", "onnxruntime", "torch-pruning", "pruneguard")
    return {d.replace("-", "_"): version(d) for d in dists}


def io_spec(
    *,
    input_shape: Sequence[int],
    n_outputs: int,
    class_labels: Sequence[str],
    description: str,
    input_name: str = "input",
    output_name: str = "logits",
) -> dict[str, Any]:
    """Names, dtypes and shapes (batch symbolic) a client needs to call the model."""
    return {
        "inputs": [{"name": input_name, "dtype": "float32", "shape": ["batch", *input_shape]}],
        "outputs": [{"name": output_name, "dtype": "float32", "shape": ["batch", n_outputs]}],
        "class_labels": list(class_labels),
        "description": description,
    }


def latency_metrics(
    dense: Mapping[str, Mapping[str, float]],
    pruned: Mapping[str, Mapping[str, float]],
    setup: Mapping[str, Any],
) -> dict[str, Any]:
    """``latency_ms``, ``baseline_latency_ms``, ``speedup`` (dense p50 / pruned p50) per batch,
    and ``latency_setup`` (threads, blocks, runs: a speed-up means little without them)."""
    setup = dict(setup)
    metrics: dict[str, Any] = {
        "latency_ms": {b: dict(s) for b, s in pruned.items()},
        "baseline_latency_ms": {b: dict(s) for b, s in dense.items()},
        "speedup": {b: dense[b]["p50"] / pruned[b]["p50"] for b in pruned},
        "latency_setup": setup,
    }
    rate = "decode_tokens_per_s"  # a decoder's latency is its time to first token; and this
    if all(rate in s for s in pruned.values()):
        metrics["decode_speedup"] = {b: pruned[b][rate] / dense[b][rate] for b in pruned}
        setup.update(
            runtime="onnxruntime-genai", measured="time to first token (p50/p95 ms) and "
            "decode tokens/s, greedy, one sequence",
        )  # fmt: skip
    return metrics


def build_manifest(
    *,
    name: str,
    kind: str,
    parent: Mapping[str, Any] | None,
    pruning: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    io: Mapping[str, Any],
    notes: Sequence[str] = (),
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest, less ``files``. Raises ValueError when a required metric is missing."""
    missing = REQUIRED_METRICS - set(metrics)
    if missing:
        raise ValueError(f"manifest metrics lack {sorted(missing)}")
    return {
        "schema": SCHEMA,
        "name": name,
        "kind": kind,
        "parent": dict(parent) if parent is not None else None,
        "pruning": dict(pruning) if pruning is not None else None,
        "metrics": dict(metrics),
        "io": dict(io),
        "notes": list(notes),
        "source": dict(source or {}),
        "versions": versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --- from a run's measurements (pruning/artifacts.py) ------------------------------------------


def side_metrics(
    recipe: Recipe, dense: Side, side: Side, label: str, quality: Mapping[str, Any],
    onnx: OnnxMeasure,
) -> dict[str, Any]:  # fmt: skip
    """The metrics every artifact has (DESIGN §3.2), for ``side`` (measured as ``label``)
    against ``dense``, then the task's ``quality`` figures and the side's own extras."""
    d, e = dense.evaluation, side.evaluation
    return {
        "accuracy": e.accuracy,
        "baseline_accuracy": d.accuracy,
        "accuracy_drop": d.accuracy - e.accuracy,
        "params": side.params,
        "baseline_params": dense.params,
        "params_reduction": 1.0 - side.params / dense.params,
        "macs": side.macs,
        "baseline_macs": dense.macs,
        "macs_reduction": 1.0 - side.macs / dense.macs,
        "onnx_bytes": onnx.onnx_bytes[label],
        "baseline_onnx_bytes": onnx.onnx_bytes["dense"],
        **latency_metrics(
            onnx.latency["dense"], onnx.latency[label], recipe.export.latency_setup()
        ),
        "parity_max_abs_diff": onnx.parity[label],
        "agreement_with_baseline": float((e.predictions == d.predictions).mean()),
        **quality,
        **side.extra,
    }


def dense_manifest(
    recipe: Recipe, dense: Side, quality: Mapping[str, Any], onnx: OnnxMeasure, *,
    io: Mapping[str, Any], record: RunRecord,
) -> dict[str, Any]:  # fmt: skip
    return build_manifest(
        name=recipe.name, kind="dense", parent=None, pruning=None,
        metrics=side_metrics(recipe, dense, dense, "dense", quality, onnx), io=io,
        notes=record.notes, source=record.source,
    )  # fmt: skip


def pruned_manifest(
    recipe: Recipe, dense: Side, pruned: Side, quality: Mapping[str, Any], onnx: OnnxMeasure, *,
    io: Mapping[str, Any], record: RunRecord, parent: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    metrics = side_metrics(recipe, dense, pruned, "pruned", quality, onnx)
    notes = [*record.notes, *record.pruned_notes]
    if recipe.method in SPARSE_METHODS and onnx.gzip_bytes:
        notes.append(_sparse_note(metrics, onnx))
    pruning = dict(record.pruning)
    if recipe.target.kind == "macs_reduction" and "resolved_amount" in pruning:
        notes.append(
            f"Target macs_reduction {recipe.target.value:g}: searched channel ratio "
            f"{pruning['resolved_amount']:.3f}, which removed {metrics['macs_reduction']:.3f} "
            "of the MACs."
        )
    pruning["acceptance"] = recipe.acceptance(metrics)
    return build_manifest(
        name=recipe.name, kind="pruned", parent=parent, pruning=pruning, metrics=metrics,
        io=io, notes=notes, source=record.source,
    )  # fmt: skip


def selection_note(selection: Mapping[str, Any]) -> str:
    chosen, budget = selection["chosen"], selection["budget"]
    return (
        f"criterion/schedule/scope chosen by trial: {chosen['criterion']}, "
        f"{chosen['schedule']['kind']} x {chosen['schedule']['steps']}, scope "
        f"{chosen['scope']}, best of "
        f"{budget['candidates']} candidates on {selection['evaluated_on']['rows']} rows of "
        f"{selection['evaluated_on']['split']} ({budget['share_of_run']:.0%} of the run's "
        f"training batches, {selection['seconds']:.0f} s); the table is pruning.selection."
    )


def _sparse_note(metrics: dict[str, Any], onnx: OnnxMeasure) -> str:
    """Add the compressed sizes to ``metrics``; return the honest CPU note."""
    metrics["onnx_gzip_bytes"] = onnx.gzip_bytes["pruned"]
    metrics["baseline_onnx_gzip_bytes"] = onnx.gzip_bytes["dense"]
    speedups = ", ".join(f"{v:.2f}x at batch {k}" for k, v in metrics["speedup"].items())
    return CPU_SPARSITY_NOTE.format(
        speedups=speedups, gz=onnx.gzip_bytes["pruned"], base_gz=onnx.gzip_bytes["dense"]
    )


def quantized_manifest(
    pruned: Mapping[str, Any],
    parent: Mapping[str, Any],
    *,
    recipe: Recipe,
    quality: Mapping[str, Any],
    latency: Mapping[str, Mapping[str, Mapping[str, float]]],
    onnx_bytes: int,
    parity: Mapping[str, Any],
    quantization: Mapping[str, Any],
) -> dict[str, Any]:
    """The int8 version's manifest, from its fp32 parent's (``pruned``) and what was measured
    of the int8 graph: ``quality`` (the task's figures against dense: accuracy or cosine,
    agreement), ``latency`` (dense, pruned and quantized, timed side by side), ``parity``
    (:func:`pruning.quantize.parent_parity`) and how it was made (``quantization``)."""
    metrics = dict(pruned["metrics"])
    metrics.update(quality)
    if "accuracy" in quality:
        metrics["accuracy_drop"] = metrics["baseline_accuracy"] - quality["accuracy"]
    dense, fp32, int8 = latency["dense"], latency["pruned"], latency["quantized"]
    metrics.update(latency_metrics(dense, int8, recipe.export.latency_setup()))
    metrics.update(
        onnx_bytes=onnx_bytes,
        parent_latency_ms={b: dict(s) for b, s in fp32.items()},
        speedup_over_parent={b: fp32[b]["p50"] / int8[b]["p50"] for b in int8},
        parity_max_abs_diff=float(parity["max_abs_diff"]),
        parity_to_parent=dict(parity),
        agreement_with_parent=float(parity["agreement"]),
    )
    machine = quantization.get("machine", {})
    notes = [
        *pruned.get("notes", []),
        f"int8 by ONNX Runtime {quantization['mode']} quantization of the pruned version "
        f"{parent['sha256'][:12]}; parity_max_abs_diff is against that fp32 parent's outputs "
        f"(int8 is not bit-close: the gate uses quantize.min_similarity). Speed measured on "
        f"{machine.get('cpu') or 'this CPU'}, "
        + ("with VNNI (" + ", ".join(machine.get("int8_flags", [])) + ")"
           if machine.get("vnni") else "without VNNI"),
    ]  # fmt: skip
    pruning = {
        **dict(pruned["pruning"] or {}),
        "quantization": dict(quantization),
        "acceptance": recipe.acceptance(metrics, quantized=True),
    }
    return build_manifest(
        name=pruned["name"], kind="quantized", parent=parent, pruning=pruning, metrics=metrics,
        io=pruned["io"], notes=notes, source=pruned.get("source"),
    )  # fmt: skip
