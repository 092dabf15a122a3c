"""all-MiniLM-L6-v2 with 40% of its attention heads removed (the built-in recipe minilm-heads).

Runs the recipe end to end (Taylor head scores → physical removal → hidden-state distillation
→ ONNX → ONNX Runtime latency at sequence length 128, batch 1 and 8), then compares criteria
at the same head count *without* recovery: Taylor vs weight magnitude vs random (several
seeds). Prints one JSON object on stdout; progress on stderr.

Targets (issue 3): mean cosine to dense >= 0.95 after recovery; paraphrase retrieval within
5 points of dense; speed-up reported; importance-based beats random on cosine.

    .venv/bin/python bench/minilm_heads.py [--random-seeds 3] [--blocks 6]
    .venv/bin/python bench/minilm_heads.py --latency-only --blocks 12   # re-time only
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pruneguard.pruning import pipeline, transformer
from pruneguard.pruning.methods.heads import HeadPruner
from pruneguard.pruning.recipe import load_recipe
from pruneguard.pruning.text import load_minilm, load_paraphrases, load_sentences


def log(msg: str) -> None:
    print(f"[minilm_heads] {msg}", file=sys.stderr, flush=True)


def criteria_at_same_count(
    fraction: float, calibration: int, seeds: int, dense_eval: transformer.EmbeddingEval
) -> dict[str, Any]:
    model, tokenizer = load_minilm()
    pairs = load_paraphrases()
    opts = transformer.EmbeddingOptions()
    cal = transformer.sentence_batches(tokenizer, load_sentences()[:calibration], opts)
    runs = [("magnitude", 0)] + [("random", s) for s in range(seeds)]
    out: dict[str, Any] = {"random": []}
    for criterion, seed in runs:
        student = copy.deepcopy(model)
        pruner = HeadPruner(student, criterion=criterion, target=fraction,
                            calibration=cal, forward=transformer.encode_batch, seed=seed)  # fmt: skip
        pruner.step()
        cosine = transformer.mean_cosine(
            transformer.evaluate(student, tokenizer, pairs), dense_eval
        )
        log(f"{criterion} seed {seed}: {pruner.report()['heads_after']} heads, cosine {cosine:.4f}")
        if criterion == "random":
            out["random"].append(cosine)
        else:
            out[criterion] = cosine
    return out


def latency_only(fraction: float, calibration: int, blocks: int) -> dict[str, Any]:
    """Re-time dense vs head-pruned (no recovery: latency depends on shapes, not weights)."""
    model, tokenizer = load_minilm()
    opts = transformer.EmbeddingOptions()
    cal = transformer.sentence_batches(tokenizer, load_sentences()[:calibration], opts)
    student = copy.deepcopy(model)
    pruner = HeadPruner(student, criterion="taylor", target=fraction, calibration=cal,
                        forward=transformer.encode_batch)  # fmt: skip
    pruner.step()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dense": Path(tmp) / "dense.onnx", "pruned": Path(tmp) / "pruned.onnx"}
        transformer.export_encoder(model, paths["dense"])
        transformer.export_encoder(student, paths["pruned"])
        load = os.getloadavg()[0]
        lat = transformer.measure_latency(
            paths, batch_sizes=(1, 8), seq_len=128, blocks=blocks, runs=11
        )
    return {
        "heads_after": pruner.report()["heads_after"],
        "latency_ms_p50": {b: {k: lat[k][b]["p50"] for k in lat} for b in ("1", "8")},
        "ort_speedup_seq128": {
            b: lat["dense"][b]["p50"] / lat["pruned"][b]["p50"] for b in ("1", "8")
        },
        "blocks": blocks,
        "load_average_1m": {"start": load, "end": os.getloadavg()[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--latency-only", action="store_true", help="only re-time dense vs pruned")
    args = parser.parse_args()
    recipe = load_recipe("minilm-heads")
    if args.latency_only:
        calibration = int(recipe.extra.get("calibration", 96))
        print(json.dumps(latency_only(recipe.target.value, calibration, args.blocks), indent=2))
        return
    recipe = dataclasses.replace(
        recipe, export=dataclasses.replace(recipe.export, latency_blocks=args.blocks)
    )
    start, load_before = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        _, pm = pipeline.run(recipe, Path(tmp) / "out", progress=True)
    m, p = pm["metrics"], pm["pruning"]
    model, tokenizer = load_minilm()
    dense_eval = transformer.evaluate(model, tokenizer, load_paraphrases())
    calibration = int(recipe.extra.get("calibration", 96))
    compare = criteria_at_same_count(
        recipe.target.value, calibration, args.random_seeds, dense_eval
    )
    compare["taylor"] = p["mean_cosine_before_recovery"]
    drop = (m["baseline_accuracy"] - m["accuracy"]) * 100
    result = {
        "recipe": recipe.name,
        "heads_before": p["heads_before"],
        "heads_after": p["heads_after"],
        "criterion": p["criterion_used"],
        "mean_cosine_to_dense": {
            "before_recovery": p["mean_cosine_before_recovery"],
            "after_recovery": m["mean_cosine_to_dense"],
        },
        "paraphrase_retrieval": {
            "dense": m["baseline_accuracy"],
            "pruned": m["accuracy"],
            "drop_points": drop,
        },
        "ort_speedup_seq128": m["speedup"],
        "latency_ms_p50": {
            b: {"dense": m["baseline_latency_ms"][b]["p50"], "pruned": m["latency_ms"][b]["p50"]}
            for b in m["speedup"]
        },
        "kv_bytes_per_token": {
            "dense": m["baseline_kv_bytes_per_token"],
            "pruned": m["kv_bytes_per_token"],
        },
        "params": {"dense": m["baseline_params"], "pruned": m["params"]},
        "macs_seq128": {"dense": m["baseline_macs"], "pruned": m["macs"]},
        "parity_max_abs_diff": m["parity_max_abs_diff"],
        "same_head_count_no_recovery_cosine": compare,
        "checks": {
            "cosine_after_recovery_ge_0.95": m["mean_cosine_to_dense"] >= 0.95,
            "retrieval_within_5_points": drop <= 5.0,
            "importance_beats_every_random_seed": compare["taylor"] > max(compare["random"]),
        },
        "seconds": round(time.time() - start, 1),
        "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
