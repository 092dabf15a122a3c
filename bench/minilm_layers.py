"""all-MiniLM-L6-v2 at 6 → 3 layers (the built-in recipe minilm-layers).

Drops the three layers whose removal alone changes the embeddings least, distils the dense
model's token hidden states on unlabelled sentences, exports ONNX and times dense vs pruned
with ONNX Runtime at sequence length 128, batch 1 and 8. Prints one JSON object on stdout;
progress on stderr.

Targets (issue 3): speed-up >= 1.8x at batch 1 and 8; cosine to dense before and after
distillation reported.

    .venv/bin/python bench/minilm_layers.py [--blocks 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pruneguard.pruning import pipeline
from pruneguard.pruning.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    recipe = load_recipe("minilm-layers")
    recipe = dataclasses.replace(
        recipe, export=dataclasses.replace(recipe.export, latency_blocks=args.blocks)
    )
    start, load_before = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        _, pm = pipeline.run(recipe, Path(tmp) / "out", progress=True)
    m, p = pm["metrics"], pm["pruning"]
    print(f"[minilm_layers] done in {time.time() - start:.0f}s", file=sys.stderr)
    result = {
        "recipe": recipe.name,
        "layers_before": p["layers_before"],
        "layers_after": p["layers_after"],
        "kept_layers": p["kept_layers"],
        "criterion": p["criterion_used"],
        "mean_cosine_to_dense": {
            "before_distillation": p["mean_cosine_before_recovery"],
            "after_distillation": m["mean_cosine_to_dense"],
        },
        "paraphrase_retrieval": {"dense": m["baseline_accuracy"], "pruned": m["accuracy"]},
        "ort_speedup_seq128": m["speedup"],
        "latency_ms_p50": {
            b: {"dense": m["baseline_latency_ms"][b]["p50"], "pruned": m["latency_ms"][b]["p50"]}
            for b in m["speedup"]
        },
        "kv_bytes_per_token": {
            "dense": m["baseline_kv_bytes_per_token"],
            "pruned": m["kv_bytes_per_token"],
        },
        "macs_seq128": {"dense": m["baseline_macs"], "pruned": m["macs"]},
        "parity_max_abs_diff": m["parity_max_abs_diff"],
        "checks": {f"speedup_ge_1.8_batch_{b}": s >= 1.8 for b, s in m["speedup"].items()},
        "seconds": round(time.time() - start, 1),
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
