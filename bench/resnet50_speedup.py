"""ResNet-50 channel pruning: realized ONNX Runtime CPU speed-up vs MAC reduction.

Runs the built-in ``resnet50`` recipe (the project's ResNet-50, random init, 50% of the
channels of every group removed by L1, counts rounded to multiples of 8, classifier outputs
kept) through the same pipeline as ``pruneguard prune``, and reports what the pruned
artifact's manifest says: ``speedup`` per batch size (dense p50 / pruned p50 with ONNX Runtime,
timed in alternating blocks), the MAC reduction, parity and ``latency_setup``. Prints one JSON
object on stdout; progress on stderr.

Targets (issue 2): speed-up >= 3.5x at batch 1 and 8, and speed-up >= 0.9 x the MAC
reduction factor.

``--method unstructured`` (80% global magnitude) or ``--method nm`` (2:4) instead zeroes
weights without removing channels: the control showing that ONNX Runtime's CPU kernels gain
nothing from zeros.

    .venv/bin/python bench/resnet50_speedup.py [--threads N] [--blocks 6] [--round-to 8]
    .venv/bin/python bench/resnet50_speedup.py --method nm
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pruneguard.pruning.pipeline import run
from pruneguard.pruning.recipe import Recipe, Target, load_recipe

MASKS = {  # method -> target, for the zeroed-weight controls
    "unstructured": Target("sparsity", 0.8),
    "nm": Target("sparsity", 0.5),
}


def _recipe(args: argparse.Namespace) -> Recipe:
    base = load_recipe("resnet50")
    export = replace(
        base.export,
        batch_sizes=tuple(args.batch_sizes),
        latency_blocks=args.blocks,
        latency_runs=args.runs_per_block,
        ort_threads=args.threads,
    )
    if args.method == "channel":
        return replace(base, target=Target("ratio", args.ratio), round_to=args.round_to,
                       export=export)  # fmt: skip
    return replace(base, method=args.method, target=MASKS[args.method], round_to=None,
                   scope="global" if args.method == "unstructured" else None,
                   export=export)  # fmt: skip


def _summary(pruned: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    m = pruned["metrics"]
    factor = m["baseline_macs"] / m["macs"]
    speedup = m["speedup"]
    return {
        "model": "resnet50",
        "pruning": pruned["pruning"],
        "mac_reduction_factor": factor,
        "param_reduction_factor": m["baseline_params"] / m["params"],
        "weight_sparsity": m.get("weight_sparsity"),
        "onnx_bytes": {"dense": m["baseline_onnx_bytes"], "pruned": m["onnx_bytes"]},
        "parity_max_abs_diff": {
            "dense": dense["metrics"]["parity_max_abs_diff"],
            "pruned": m["parity_max_abs_diff"],
        },
        "latency_setup": m["latency_setup"],
        "latency_ms": {"dense": m["baseline_latency_ms"], "pruned": m["latency_ms"]},
        "speedup": speedup,  # the manifest's own field
        "speedup_over_mac_factor": {b: s / factor for b, s in speedup.items()},
        "targets_met": {
            "speedup_ge_3.5": all(s >= 3.5 for s in speedup.values()),
            "speedup_ge_0.9x_mac_factor": all(s >= 0.9 * factor for s in speedup.values()),
        },
        "notes": pruned["notes"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["channel", *MASKS], default="channel")
    ap.add_argument("--ratio", type=float, default=0.5, help="channel ratio (method channel)")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="ORT intra-op threads, as the recipe's export.ort_threads (0: ORT's)")  # fmt: skip
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs-per-block", type=int, default=11)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        dense, pruned = run(_recipe(args), Path(tmp) / "out", progress=True)
    result = _summary(pruned, dense)
    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    print(f"[resnet50_speedup] speed-up {result['speedup']}", file=sys.stderr)


if __name__ == "__main__":
    main()
