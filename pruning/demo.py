"""``make demo`` (``python -m pruning.demo``): the digits pipeline end to end, with a summary.

Trains the digits CNN, prunes ≥70% of its MACs iteratively with recovery finetuning,
exports dense and pruned ONNX models, validates them (parity, accuracy budget, latency) and
prints what a person wants to know. Each stage is a function so later issues can add
register → serve → watch → roll back after :func:`prune_stage`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "prune_stage", "summary"]

DEFAULT_OUT = Path(".pruneguard") / "demo"
RECIPE = "digits-cnn"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pruning.demo", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--recipe", default=RECIPE, help=f"recipe path or built-in name (default {RECIPE})"
    )
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: the digits CNN is too small to gain from more, "
        "and extra threads stall on a busy machine)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _clear_previous(out: Path) -> None:
    """Remove a previous demo's artifacts (only folders that hold a pruneguard manifest)."""
    for sub in ("dense", "pruned"):
        if (out / sub / "manifest.json").is_file():
            shutil.rmtree(out / sub)


def prune_stage(
    recipe_arg: str, out: Path, seed: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the recipe into ``out``; return the dense and pruned manifests."""
    from pruneguard.pruning.pipeline import run
    from pruneguard.pruning.recipe import load_recipe

    recipe = load_recipe(recipe_arg)
    if seed is not None:
        recipe = recipe.with_seed(seed)
    _clear_previous(out)
    return run(recipe, out, progress=True)


def _row(label: str, dense: str, pruned: str) -> str:
    return f"  {label:<22}{dense:>16}{pruned:>16}"


def summary(dense: dict[str, Any], pruned: dict[str, Any], advice: str, seconds: float) -> str:
    """The human-readable comparison of the two artifacts."""
    m = pruned["metrics"]
    lines = [
        f"pruneguard demo — {pruned['name']}: {pruned['pruning']['method']} pruning, "
        f"{pruned['pruning']['criterion']}, {pruned['pruning']['schedule']['kind']} × "
        f"{pruned['pruning']['schedule']['steps']}",
        _row("", "dense", "pruned"),
        _row("accuracy (held out)", f"{m['baseline_accuracy']:.4f}", f"{m['accuracy']:.4f}"),
        _row("parameters", f"{m['baseline_params']:,}", f"{m['params']:,}"),
        _row("MACs per sample", f"{m['baseline_macs']:,}", f"{m['macs']:,}"),
        _row("ONNX size (bytes)", f"{m['baseline_onnx_bytes']:,}", f"{m['onnx_bytes']:,}"),
    ]
    for batch in m["speedup"]:
        lines.append(
            _row(
                f"latency p50 batch {batch}",
                f"{m['baseline_latency_ms'][batch]['p50']:.3f} ms",
                f"{m['latency_ms'][batch]['p50']:.3f} ms",
            )
        )
    speed = ", ".join(f"{v:.2f}x at batch {k}" for k, v in m["speedup"].items())
    lines += [
        f"  MACs removed {m['macs_reduction']:.1%}; accuracy drop {m['accuracy_drop'] * 100:.2f} points; "
        f"speed-up {speed}",
        f"  agreement with dense {m['agreement_with_baseline']:.2%} of "
        f"{m.get('validation_rows', 'the held-out')} rows; "
        f"ONNX parity {m['parity_max_abs_diff']:.1e}",
        *(f"  note: {n}" for n in pruned["notes"]),
        "",
        "advice (pruneguard prune plan, deploy target cpu):",
        *(f"  {line}" for line in advice.splitlines()),
        "",
        f"finished in {seconds:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from pruneguard.pruning.advice import advise_recipe
    from pruneguard.pruning.recipe import load_recipe
    from pruneguard.registry.errors import PruneguardError

    args = _parse(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        dense, pruned = prune_stage(args.recipe, args.out, args.seed)
    except PruneguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    advice = advise_recipe(load_recipe(args.recipe)).text()
    print(summary(dense, pruned, advice, time.perf_counter() - start))
    print(f"artifacts: {args.out / 'dense'}  {args.out / 'pruned'}")
    print(
        f"next: pruneguard bench {args.out / 'dense' / 'model.onnx'} {args.out / 'pruned' / 'model.onnx'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
