"""int8 on top of pruning, measured: what the pipeline's ``quantize:`` step gives, per model.

- ``resnet50``: the built-in ResNet-50 recipe (channel ratio 0.5) with ``quantize: {mode:
  static}``; then, as the floor, ONNX Runtime's ``quant_pre_process`` + ``quantize_static``
  run by hand (QDQ, S8S8, per-channel, the same calibration batches) on the pipeline's own
  fp32 graphs, pruned and dense. All five graphs (dense fp32, pruned fp32, pipeline int8,
  by-hand int8 of pruned, by-hand int8 of dense) are timed side by side in one
  ``compare_latency`` (alternating blocks, first run of each dropped), one ORT thread.
- ``digits``: the built-in digits-cnn recipe (>= 70% of the MACs removed) + static int8 over
  several seeds: held-out accuracy of dense, fp32 pruned and int8.
- ``minilm``: a MiniLM recipe (``--recipe``, default minilm-int8: a light head + FFN cut) +
  dynamic int8 over several seeds: held-out cosine to dense of fp32 pruned and int8, and
  int8's speed-up over its fp32 parent.

Prints one JSON object on stdout; progress on stderr.

    .venv/bin/python bench/quantize_int8.py resnet50 [--blocks 6]
    .venv/bin/python bench/quantize_int8.py digits --seeds 0 1 2
    .venv/bin/python bench/quantize_int8.py minilm [--recipe minilm-fast] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pruneguard.pruning.pipeline import run
from pruneguard.pruning.quantize import cpu_int8
from pruneguard.pruning.recipe import Quantize, Recipe, load_recipe
from pruneguard.registry.artifact import read_manifest


def _say(message: str) -> None:
    print(f"[quantize_int8] {message}", file=sys.stderr, flush=True)


def _with_int8(recipe: Recipe, mode: str, args: argparse.Namespace) -> Recipe:
    export = replace(recipe.export, latency_blocks=args.blocks, ort_threads=1)
    calibration = {"calibration": args.calibration} if mode == "static" else {}
    return replace(recipe, export=export, quantize=Quantize(mode=mode, **calibration))


def _run(recipe: Recipe, out: Path) -> dict[str, dict[str, Any]]:
    run(recipe, out, progress=True)
    return {side: read_manifest(out / side) for side in ("dense", "pruned", "quantized")}


def _by_hand(src: Path, dst: Path, feeds: list[dict[str, Any]]) -> None:
    """The floor: ONNX Runtime's documented static path, nothing of pruneguard's."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    prepared = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared))
    quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip


def _graph_digest(path: Path) -> str:
    import hashlib

    import onnx

    return hashlib.sha256(onnx.load(str(path)).graph.SerializeToString()).hexdigest()


def resnet50(args: argparse.Namespace) -> dict[str, Any]:
    from pruneguard.pruning.data import load_data
    from pruneguard.pruning.latency import compare_latency, make_session
    from pruneguard.pruning.tasks.tensor_classification import calibration_feeds

    recipe = _with_int8(load_recipe("resnet50"), "static", args)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        manifests = _run(recipe, out)
        feeds = calibration_feeds(recipe, load_data(recipe.data, seed=recipe.seed)["train"])
        _say(f"by hand: quant_pre_process + quantize_static on {len(feeds)} batches")
        _by_hand(out / "pruned" / "model.onnx", Path(tmp) / "hand_pruned.onnx", feeds)
        _by_hand(out / "dense" / "model.onnx", Path(tmp) / "hand_dense.onnx", feeds)
        paths = {
            "dense_fp32": out / "dense" / "model.onnx",
            "pruned_fp32": out / "pruned" / "model.onnx",
            "pruned_int8_pipeline": out / "quantized" / "model.onnx",
            "pruned_int8_by_hand": Path(tmp) / "hand_pruned.onnx",
            "dense_int8_by_hand": Path(tmp) / "hand_dense.onnx",
        }
        same_graph = _graph_digest(paths["pruned_int8_pipeline"]) == _graph_digest(
            paths["pruned_int8_by_hand"]
        )
        sessions = {k: make_session(p, 1) for k, p in paths.items()}
        rows = feeds[0]["input"]
        timing: dict[str, dict[str, float]] = {}
        for batch in args.batch_sizes:
            _say(f"timing 5 graphs side by side at batch {batch}")
            feed = {"input": torch.from_numpy(rows).repeat(batch, 1, 1, 1)[:batch].numpy()}
            stats = compare_latency(sessions, feed, blocks=args.blocks, runs_per_block=args.runs)
            timing[str(batch)] = {k: s.p50_ms for k, s in stats.items()}
    vs_dense = {b: {k: t["dense_fp32"] / v for k, v in t.items()} for b, t in timing.items()}
    q = manifests["quantized"]["metrics"]
    return {
        "model": "resnet50 (random weights, synthetic data: latency only)",
        "calibration_batches": len(feeds),
        # the pipeline calls the same ORT tools: the int8 graphs are the same, byte for byte;
        # any timing difference between the two is the measurement's own (e.g. timing order)
        "pipeline_graph_equals_by_hand": same_graph,
        "p50_ms": timing,
        "speedup_vs_dense_fp32": vs_dense,
        "int8_over_fp32_pruned": {b: t["pruned_fp32"] / t["pruned_int8_pipeline"] for b, t in timing.items()},
        "manifest": {"speedup": q["speedup"], "speedup_over_parent": q["speedup_over_parent"],
                     "parity_to_parent": q["parity_to_parent"],
                     "acceptance": manifests["quantized"]["pruning"]["acceptance"]["reason"]},
        "targets_met": {
            # the same ONNX Runtime tool: equal up to timing noise (5% allowed)
            "pipeline_graph_equals_by_hand": same_graph,
            "pipeline_ge_by_hand": all(v["pruned_int8_pipeline"] >= 0.95 * v["pruned_int8_by_hand"]
                                       for v in vs_dense.values()),
        },
    }  # fmt: skip


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def digits(args: argparse.Namespace) -> dict[str, Any]:
    per_seed = []
    for seed in args.seeds:
        recipe = _with_int8(load_recipe("digits-cnn").with_seed(seed), "static", args)
        with tempfile.TemporaryDirectory() as tmp:
            m = _run(recipe, Path(tmp) / "out")
        q, p = m["quantized"]["metrics"], m["pruned"]["metrics"]
        per_seed.append({
            "seed": seed,
            "macs_reduction": p["macs_reduction"],
            "accuracy": {"dense": p["baseline_accuracy"], "pruned": p["accuracy"], "int8": q["accuracy"]},
            "int8_minus_pruned_points": (q["accuracy"] - p["accuracy"]) * 100,
            "int8_minus_dense_points": (q["accuracy"] - p["baseline_accuracy"]) * 100,
            "agreement_with_parent": q["agreement_with_parent"],
            "speedup_over_parent": q["speedup_over_parent"],
            "speedup_vs_dense": q["speedup"],
            "accepted": m["quantized"]["pruning"]["acceptance"]["passed"],
            "reason": m["quantized"]["pruning"]["acceptance"]["reason"],
        })  # fmt: skip
        _say(f"seed {seed}: {per_seed[-1]['accuracy']}")
    return {
        "model": "digits-cnn (held-out split of sklearn digits)",
        "seeds": per_seed,
        "int8_minus_pruned_points": _spread([s["int8_minus_pruned_points"] for s in per_seed]),
        "int8_minus_dense_points": _spread([s["int8_minus_dense_points"] for s in per_seed]),
        "targets_met": {
            "macs_cut_ge_70pct": all(s["macs_reduction"] >= 0.7 for s in per_seed),
            "within_0.5_of_pruned": all(abs(s["int8_minus_pruned_points"]) <= 0.5 for s in per_seed),
            "within_1_of_dense": all(s["int8_minus_dense_points"] >= -1.0 for s in per_seed),
        },
    }  # fmt: skip


def minilm(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    per_seed = []
    for seed in args.seeds:
        recipe = _with_int8(load_recipe(args.recipe).with_seed(seed), "dynamic", args)
        with tempfile.TemporaryDirectory() as tmp:
            m = _run(recipe, Path(tmp) / "out")
        q, p = m["quantized"]["metrics"], m["pruned"]["metrics"]
        per_seed.append({
            "seed": seed,
            "mean_cosine_to_dense": {"pruned": p["mean_cosine_to_dense"], "int8": q["mean_cosine_to_dense"]},
            "cosine_to_fp32_parent": q["parity_to_parent"],
            "speedup_vs_dense": {"pruned": p["speedup"], "int8": q["speedup"]},
            "int8_over_fp32_pruned": q["speedup_over_parent"],
            "onnx_bytes": {"dense": p["baseline_onnx_bytes"], "pruned": p["onnx_bytes"], "int8": q["onnx_bytes"]},
            "fused_operators": m["quantized"]["pruning"]["quantization"].get("fused_operators"),
            "acceptance": m["quantized"]["pruning"]["acceptance"]["reason"],
        })  # fmt: skip
        _say(f"seed {seed}: cosine {per_seed[-1]['mean_cosine_to_dense']}")
    cosines = [s["mean_cosine_to_dense"]["int8"] for s in per_seed]
    return {
        "model": f"all-MiniLM-L6-v2, recipe {args.recipe}, seq 128",
        "seeds": per_seed,
        "int8_cosine_to_dense": _spread(cosines),
        "int8_over_fp32_pruned_b1": _spread([s["int8_over_fp32_pruned"]["1"] for s in per_seed]),
        "targets_met": {"int8_cosine_ge_0.95": min(cosines) >= 0.95},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=["resnet50", "digits", "minilm"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipe", default="minilm-int8", help="minilm: the text recipe")
    ap.add_argument("--calibration", type=int, default=16, help="static: calibration batches")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = {"resnet50": resnet50, "digits": digits, "minilm": minilm}[args.model](args)
    result["machine"] = cpu_int8()
    result["ort_threads"] = 1
    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
