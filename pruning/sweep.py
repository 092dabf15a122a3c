"""``pruneguard prune sweep``: one trained dense model, many pruning variants, side by side.

Each variant (target × criterion × schedule) prunes a copy of the same dense model, is
finetuned as its recipe says, evaluated on the held-out split, exported to ONNX and timed
against the dense ONNX model in alternating blocks. The result is a table (stdout),
``sweep.json`` and ``sweep.png`` (accuracy vs speed-up, one-shot vs iterative).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pruneguard.pruning.recipe import Recipe, variant

__all__ = ["SweepResult", "SweepRow", "plot", "sweep", "variants"]


@dataclass(frozen=True)
class SweepRow:
    target_kind: str
    target: float
    criterion: str
    schedule: str
    steps: int
    accuracy: float
    accuracy_drop: float
    macs: int
    macs_reduction: float
    params: int
    onnx_bytes: int
    speedup: dict[str, float]  # batch size -> dense p50 / pruned p50


@dataclass(frozen=True)
class SweepResult:
    recipe: str
    method: str
    baseline: dict[str, Any]  # accuracy, macs, params, onnx_bytes
    rows: tuple[SweepRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        b = self.baseline
        batches = list(self.rows[0].speedup) if self.rows else []
        head = ["target", "criterion", "schedule", "accuracy", "drop", "MACs", "MACs -%"]
        head += [f"speed-up b{k}" for k in batches]
        lines = [
            f"{self.recipe} ({self.method}); dense: accuracy {b['accuracy']:.4f}, {b['macs']:,} MACs",
            "  ".join(f"{h:>12}" for h in head),
        ]
        for r in self.rows:
            cells = [f"{r.target_kind}={r.target:g}", r.criterion, f"{r.schedule}×{r.steps}",
                     f"{r.accuracy:.4f}", f"{r.accuracy_drop * 100:+.2f}pt", f"{r.macs:,}",
                     f"{r.macs_reduction:.1%}", *(f"{r.speedup[k]:.2f}x" for k in batches)]  # fmt: skip
            lines.append("  ".join(f"{c:>12}" for c in cells))
        return "\n".join(lines)


def variants(
    recipe: Recipe,
    *,
    targets: Sequence[float] | None = None,
    criteria: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
) -> list[Recipe]:
    """Every combination of the given values (the recipe's own value where none is given)."""
    grid = itertools.product(
        targets or [recipe.target.value],
        criteria or [recipe.criterion],
        schedules or [recipe.schedule.kind],
    )
    return [variant(recipe, target=t, criterion=c, schedule=s) for t, c, s in grid]


def sweep(
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    targets: Sequence[float] | None = None,
    criteria: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run the variants on one dense model; write ``out/sweep.json`` and ``out/sweep.png``."""
    from pruneguard.pruning.pipeline import evaluate, prepare, prune_copy

    todo = variants(recipe, targets=targets, criteria=criteria, schedules=schedules)
    prep = prepare(recipe, progress=progress)
    todo = [_chosen(v, prep.recipe) for v in todo]
    b = prep.baseline
    rows = []
    with tempfile.TemporaryDirectory(prefix="pruneguard-sweep-") as tmp:
        dense_onnx = _export(prep.model, prep.example, Path(tmp) / "dense.onnx", recipe)
        for i, v in enumerate(todo):
            model = prune_copy(prep, v, progress=progress)
            ev = evaluate(model, prep.data["val"], prep.example)
            pruned_onnx = _export(model, prep.example, Path(tmp) / f"v{i}.onnx", recipe)
            rows.append(
                SweepRow(
                    target_kind=v.target.kind, target=v.target.value, criterion=v.criterion,
                    schedule=v.schedule.kind, steps=v.schedule.steps, accuracy=ev.accuracy,
                    accuracy_drop=b.accuracy - ev.accuracy, macs=ev.macs,
                    macs_reduction=1 - ev.macs / b.macs, params=ev.params,
                    onnx_bytes=pruned_onnx.stat().st_size,
                    speedup=_speedup(dense_onnx, pruned_onnx, prep.baseline.inputs, recipe),
                )
            )  # fmt: skip
        baseline = {"accuracy": b.accuracy, "macs": b.macs, "params": b.params,
                    "onnx_bytes": dense_onnx.stat().st_size}  # fmt: skip
    result = SweepResult(recipe.name, recipe.method, baseline, tuple(rows))
    _write(result, Path(out))
    return result


def _chosen(v: Recipe, chosen: Recipe) -> Recipe:
    """``v`` with any ``auto`` replaced by what the trial chose (``chosen``: prep's recipe)."""
    from dataclasses import replace

    if v.criterion == "auto":
        v = replace(v, criterion=chosen.criterion)
    if v.schedule.kind == "auto":
        v = replace(v, schedule=chosen.schedule)
    if v.scope == "auto":
        v = replace(v, scope=chosen.scope)
    return v


def _export(model: Any, example: Any, path: Path, recipe: Recipe) -> Path:
    from pruneguard.pruning.export import export_onnx

    export_onnx(model, example, path, opset=recipe.export.opset)
    return path


def _speedup(dense: Path, pruned: Path, rows: Any, recipe: Recipe) -> dict[str, float]:
    import numpy as np

    from pruneguard.pruning.latency import compare_latency, make_session

    threads = recipe.export.ort_threads
    sessions = {"dense": make_session(dense, threads), "pruned": make_session(pruned, threads)}
    result = {}
    for batch in recipe.export.batch_sizes:
        reps = -(-batch // len(rows))
        feed = {"input": np.concatenate([rows] * reps)[:batch].astype(np.float32)}
        stats = compare_latency(sessions, feed, blocks=recipe.export.latency_blocks,
                                runs_per_block=recipe.export.latency_runs)  # fmt: skip
        result[str(batch)] = stats["dense"].p50_ms / stats["pruned"].p50_ms
    return result


def _write(result: SweepResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    part = out / "sweep.json.part"
    part.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(part, out / "sweep.json")
    plot(result, out / "sweep.png")


def plot(result: SweepResult, path: Path) -> None:
    """Accuracy vs speed-up (first batch size): one marker per schedule, one colour per criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"one-shot": "o", "iterative": "s"}
    criteria = sorted({r.criterion for r in result.rows})
    colours = {c: f"C{i}" for i, c in enumerate(criteria)}
    for r in result.rows:
        x = next(iter(r.speedup.values()), 1.0)
        ax.scatter(x, r.accuracy, marker=markers[r.schedule], color=colours[r.criterion], s=50)
        ax.annotate(
            f"{r.target:g}", (x, r.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.axhline(
        result.baseline["accuracy"], color="grey", linestyle="--", linewidth=1, label="dense"
    )
    for s, m in markers.items():
        ax.scatter([], [], marker=m, color="black", label=s)
    for c in criteria:
        ax.scatter([], [], marker="o", color=colours[c], label=c)
    batch = next(iter(result.rows[0].speedup), "?") if result.rows else "?"
    ax.set(xlabel=f"ONNX Runtime speed-up (batch {batch})", ylabel="held-out accuracy",
           title=f"{result.recipe}: accuracy vs speed-up")  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    part = path.with_name(path.name + ".part.png")
    fig.savefig(part, dpi=110)
    plt.close(fig)
    os.replace(part, path)
