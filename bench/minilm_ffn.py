"""all-MiniLM-L6-v2 pruned by the built-in recipe minilm-fast (heads + FFN width, distilled).

For each seed: the recipe's pruning and recovery (``prune_encoder`` → hidden-state
distillation, exactly as ``pruneguard prune run`` does them), held-out mean cosine to dense
and paraphrase retrieval, then ONNX export and ONNX Runtime latency of dense vs pruned timed
side by side in one run (alternating blocks, each block's first run dropped, 1 thread,
sequence length 128, batch 1 and 8). Prints one JSON object on stdout (per seed, and the
spread over seeds); progress on stderr.

Goal (issue: FFN pruning): mean cosine to dense >= 0.95 and ORT speed-up >= ~1.7x at batch
1 and 8 (serving overhead comes on top; the served target is 1.6x).

    .venv/bin/python bench/minilm_ffn.py [--seeds 3] [--blocks 6] [--recipe minilm-fast]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pruneguard.pruning import transformer
from pruneguard.pruning.recipe import Recipe, load_recipe
from pruneguard.pruning.text import load_minilm, load_paraphrases, load_sentences

BATCHES = ("1", "8")


def log(msg: str) -> None:
    print(f"[minilm_ffn] {msg}", file=sys.stderr, flush=True)


def prune_and_recover(recipe: Recipe, teacher: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The recipe's pruning and distillation on a copy of ``teacher`` (what transformer.run does)."""
    opts = transformer.EmbeddingOptions.from_mapping(recipe.extra)
    torch.manual_seed(recipe.seed)
    sentences = load_sentences()[: opts.train_sentences]
    train = transformer.sentence_batches(tokenizer, sentences, opts)
    calibration = transformer.sentence_batches(tokenizer, sentences[: opts.calibration], opts)
    student = copy.deepcopy(teacher)

    def recover(step: int, epochs: int | None = None) -> None:
        n = recipe.finetune.recovery_epochs if epochs is None else epochs
        transformer.distill(student, teacher, train, epochs=n, lr=recipe.finetune.lr, seed=step)

    report = transformer.prune_encoder(student, recipe, calibration, recover)
    recover(recipe.schedule.steps, recipe.finetune.epochs)
    return student.eval(), report


def one_seed(
    recipe: Recipe, teacher: Any, tokenizer: Any, dense_eval: Any, dense_onnx: Path, blocks: int
) -> dict[str, Any]:
    start = time.time()
    student, report = prune_and_recover(recipe, teacher, tokenizer)
    seconds = round(time.time() - start, 1)
    pruned_eval = transformer.evaluate(student, tokenizer, load_paraphrases())
    cosine = transformer.mean_cosine(pruned_eval, dense_eval)
    log(f"seed {recipe.seed}: cosine {cosine:.4f} after {seconds} s; timing")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pruned.onnx"
        transformer.export_encoder(student, path)
        load = os.getloadavg()[0]
        lat = transformer.measure_latency(
            {"dense": dense_onnx, "pruned": path}, batch_sizes=(1, 8), seq_len=128,
            blocks=blocks, runs=recipe.export.latency_runs, threads=1,
        )  # fmt: skip
    speedup = {b: lat["dense"][b]["p50"] / lat["pruned"][b]["p50"] for b in BATCHES}
    log(f"seed {recipe.seed}: speed-up {speedup}")
    return {
        "seed": recipe.seed,
        "mean_cosine_to_dense": cosine,
        "paraphrase_retrieval": pruned_eval.retrieval_accuracy,
        "ort_speedup_seq128": speedup,
        "latency_ms_p50": {b: {k: lat[k][b]["p50"] for k in lat} for b in BATCHES},
        "heads_after": report.get("heads_after"),
        "layers_after": report.get("layers_after"),
        "ffn_width_after": sorted(set(report.get("ffn_width_after", {}).values())),
        "params": sum(p.numel() for p in student.parameters()),
        "macs_seq128": transformer.count_macs(student, 128),
        "seconds_prune_and_distill": seconds,
        "load_average_1m": {"start": load, "end": os.getloadavg()[0]},
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="minilm-fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    start = time.time()
    teacher, tokenizer = load_minilm()
    dense_eval = transformer.evaluate(teacher, tokenizer, load_paraphrases())
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        dense_onnx = Path(tmp) / "dense.onnx"
        transformer.export_encoder(teacher, dense_onnx)
        for seed in range(args.seeds):
            runs.append(
                one_seed(
                    recipe.with_seed(seed), teacher, tokenizer, dense_eval, dense_onnx, args.blocks
                )
            )
    cosines = [r["mean_cosine_to_dense"] for r in runs]
    speed = {b: spread([r["ort_speedup_seq128"][b] for r in runs]) for b in BATCHES}
    result = {
        "recipe": recipe.name,
        "method": recipe.method,
        "target": recipe.pruning_section()["target"],
        "dense": {
            "paraphrase_retrieval": dense_eval.retrieval_accuracy,
            "params": sum(p.numel() for p in teacher.parameters()),
            "macs_seq128": transformer.count_macs(teacher, 128),
        },
        "seeds": runs,
        "mean_cosine_to_dense": spread(cosines),
        "ort_speedup_seq128": speed,
        "latency_setup": {
            "ort_threads": 1,
            "seq_len": 128,
            "blocks": args.blocks,
            "runs_per_block": recipe.export.latency_runs,
            "cpus": os.cpu_count(),
        },
        "checks": {
            "cosine_ge_0.95_every_seed": min(cosines) >= 0.95,
            "speedup_ge_1.7_every_seed": all(speed[b]["min"] >= 1.7 for b in BATCHES),
        },
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
