"""The built-in text classifier (recipe minilm-topics) over seeds: pruned vs dense accuracy on
the held-out split, agreement, ONNX Runtime speed-up. Prints JSON on stdout (issue 14, "must
show" 3: pruned accuracy within 1 point of dense).

Each seed draws its own held-out split (a quarter of each topic, by the recipe's seed),
fine-tunes its own dense model and prunes it, so the spread covers data, training and
pruning. The held-out split is ~238 texts: one point is ~2.4 texts. Per-seed lines go to
stderr as each seed ends.

    .venv/bin/python bench/minilm_topics.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_seed(seed: int) -> dict[str, float]:
    from pruneguard.pruning.pipeline import run
    from pruneguard.pruning.recipe import load_recipe

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pruneguard-topics-") as tmp:
        _, pruned = run(load_recipe("minilm-topics").with_seed(seed), Path(tmp), progress=False)
    m = pruned["metrics"]
    return {
        "seed": seed,
        "dense_accuracy": m["baseline_accuracy"],
        "pruned_accuracy": m["accuracy"],
        "drop_points": round(100 * (m["baseline_accuracy"] - m["accuracy"]), 2),
        "agreement": m["agreement_with_baseline"],
        "speedup_b1": m["speedup"]["1"],
        "speedup_b8": m["speedup"]["8"],
        "validation_rows": m["validation_rows"],
        "accepted": pruned["pruning"]["acceptance"]["passed"],
        "seconds": round(time.perf_counter() - started),
    }


def spread(values: list[float]) -> dict[str, float]:
    out = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    if len(values) > 1:
        out["stdev"] = statistics.stdev(values)
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runs.append(one_seed(seed))
        print(f"[minilm_topics] {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    drops = [r["drop_points"] for r in runs]
    print(json.dumps({
        "bench": "minilm_topics",
        "recipe": "minilm-topics (heads 0.25 + ffn 0.5, distilled)",
        "seeds": runs,
        "drop_points": spread(drops),
        "dense_accuracy": spread([r["dense_accuracy"] for r in runs]),
        "pruned_accuracy": spread([r["pruned_accuracy"] for r in runs]),
        "agreement": spread([r["agreement"] for r in runs]),
        "speedup_b1": spread([r["speedup_b1"] for r in runs]),
        "speedup_b8": spread([r["speedup_b8"] for r in runs]),
        "checks": {"within_1_point_every_seed": max(drops) <= 1.0,
                   "within_1_point_on_average": statistics.fmean(drops) <= 1.0},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
