"""Input shifts, measured offline on both ONNX models; choosing the one to replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pruneguard.pruning.recipe import Recipe

from pruneguard.demo.config import AGENT_MARGIN, MIN_GAP, SEED, DemoConfig, Timeline

__all__ = [
    "SHIFTS",
    "Detectable",
    "Shift",
    "ShiftChoice",
    "ShiftResult",
    "choose_shift",
    "held_out",
    "measure_shifts",
    "onnx_sessions",
    "pick_shift",
    "shift_table",
]


def held_out(recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The validation split the recipe held out: raw 8x8 inputs (N, 1, 8, 8) and labels."""
    from pruneguard.pruning.data import load_data

    loader = load_data(recipe.data, seed=recipe.seed)["val"]
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in loader), strict=True)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _blur(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[-2:]
    total = np.zeros_like(x, dtype=np.float64)
    for i in range(3):
        for j in range(3):
            total += padded[..., i : i + h, j : j + w]
    return total / 9.0


def _noise(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, s, x.shape)


def _dropout(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return x * (rng.random(x.shape) >= s)


def _blurred(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return (1 - s) * x + s * _blur(x)


def _contrast(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return x * s


def _translate(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    k = int(s)
    moved = np.roll(x, k, axis=-1)
    moved[..., :k] = 0.0
    return moved


# kind -> (what it does, the function, strengths from mild to strong)
SHIFTS: dict[str, tuple[str, Callable[..., np.ndarray], tuple[float, ...]]] = {
    "noise": ("gaussian pixel noise, sigma (pixels are 0..16)", _noise, (1, 2, 3, 4, 5, 6, 8)),
    "dropout": ("fraction of pixels set to 0", _dropout, (0.1, 0.2, 0.3, 0.4, 0.5)),
    "blur": ("blend with a 3x3 box blur", _blurred, (0.25, 0.5, 0.75, 1.0)),
    "contrast": ("pixels scaled by", _contrast, (0.8, 0.6, 0.5, 0.4, 0.3)),
    "translate": ("moved right by pixels", _translate, (1, 2)),
}


@dataclass(frozen=True)
class Shift:
    kind: str
    strength: float

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shifted = SHIFTS[self.kind][1](x, self.strength, rng)
        return np.clip(shifted, 0.0, 16.0).astype(np.float32)

    def __str__(self) -> str:
        return f"{self.kind} {self.strength:g} ({SHIFTS[self.kind][0]})"


@dataclass(frozen=True)
class ShiftResult:
    """Both models on the same shifted rows: accuracies and the discordant pairs."""

    shift: Shift
    dense: float
    pruned: float
    rows: int
    dense_only: int = 0  # rows only the dense model got right
    pruned_only: int = 0  # rows only the pruned model got right

    @property
    def gap(self) -> float:
        return self.dense - self.pruned

    def window_p(self, window_rows: int, tolerance: float) -> float:
        """The agent's paired test (McNemar, non-inferiority margin ``tolerance``) on a window
        of ``window_rows`` labelled pairs with these proportions: would it see the gap?"""
        from pruneguard.agent.checks import mcnemar_p_value

        scale = window_rows / self.rows
        b, c = round(self.pruned_only * scale), round(self.dense_only * scale)
        return mcnemar_p_value(b, c, window_rows, tolerance)


def _correct(session: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return np.asarray(logits.argmax(axis=1) == y)


def measure_shifts(
    sessions: dict[str, Any], x: np.ndarray, y: np.ndarray, *, draws: int, seed: int = SEED
) -> list[ShiftResult]:
    """Accuracy of ``sessions["dense"]`` and ``sessions["pruned"]`` on every shift of
    :data:`SHIFTS`, over ``draws`` random draws of the rows (the same draws for both)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.concatenate([x] * draws), np.concatenate([y] * draws)
    results = []
    for kind, (_, _, strengths) in SHIFTS.items():
        for strength in strengths:
            shift = Shift(kind, strength)
            shifted = shift.apply(xs, rng)
            dense, pruned = (_correct(sessions[k], shifted, ys) for k in ("dense", "pruned"))
            results.append(_paired(shift, dense, pruned))
    return results


def _paired(shift: Shift, dense: np.ndarray, pruned: np.ndarray) -> ShiftResult:
    return ShiftResult(
        shift,
        dense=float(dense.mean()),
        pruned=float(pruned.mean()),
        rows=len(dense),
        dense_only=int((dense & ~pruned).sum()),
        pruned_only=int((pruned & ~dense).sum()),
    )


@dataclass(frozen=True)
class Detectable:
    """When a measured shift counts as separating the models."""

    min_gap: float = MIN_GAP
    window_rows: int = 600  # labelled pairs the agent's window is expected to hold
    tolerance: float = 0.01  # the agent's margin plus the gap the manifest expects
    alpha: float = 1e-3  # 10x stricter than the agent's 0.01: it must fail 3 ticks running

    def __call__(self, r: ShiftResult) -> bool:
        return r.gap >= self.min_gap and r.window_p(self.window_rows, self.tolerance) < self.alpha


def choose_shift(
    results: Sequence[ShiftResult], detectable: Callable[[ShiftResult], bool] | None = None
) -> tuple[ShiftResult, bool]:
    """The mildest shift (highest dense accuracy) among each kind's first strength at which
    the pruned model clearly trails (``detectable``, by default :class:`Detectable`); else
    the largest gap found, and False."""
    detectable = detectable or Detectable()
    firsts = []
    for kind in SHIFTS:
        found = [r for r in results if r.shift.kind == kind and detectable(r)]
        if found:
            firsts.append(found[0])  # results run from mild to strong within a kind
    if firsts:
        return max(firsts, key=lambda r: r.dense), True
    return max(results, key=lambda r: r.gap), False


def shift_table(
    results: Sequence[ShiftResult], chosen: ShiftResult, rule: Detectable | None = None
) -> str:
    rule = rule or Detectable()
    head = f"  {'shift':<11}{'strength':>9}{'dense':>9}{'pruned':>9}{'gap (pts)':>11}"
    lines = [f"{head}{'window p':>11}"]
    for r in results:
        mark = "  <- chosen" if r is chosen else ""
        p = r.window_p(rule.window_rows, rule.tolerance)
        lines.append(
            f"  {r.shift.kind:<11}{r.shift.strength:>9g}{r.dense:>9.3f}{r.pruned:>9.3f}"
            f"{r.gap * 100:>+11.1f}{p:>11.1e}{mark}"
        )
    return "\n".join(lines)


def onnx_sessions(artifacts: Path) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return {
        kind: ort.InferenceSession(
            str(artifacts / kind / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for kind in ("dense", "pruned")
    }


@dataclass(frozen=True)
class ShiftChoice:
    results: list[ShiftResult]
    chosen: ShiftResult
    separated: bool  # False: nothing was detectable; ``chosen`` is the largest gap found
    rule: Detectable


def pick_shift(
    config: DemoConfig, x: np.ndarray, y: np.ndarray, pruned: dict[str, Any], timeline: Timeline
) -> ShiftChoice:
    results = measure_shifts(onnx_sessions(config.artifacts), x, y, draws=config.shift_draws)
    m = pruned["metrics"]
    rule = Detectable(
        window_rows=config.window_rows,
        tolerance=max(m["baseline_accuracy"] - m["accuracy"], 0.0) + AGENT_MARGIN,
    )
    chosen, separated = choose_shift(results, rule)
    print(f"accuracy of both ONNX models on {results[0].rows} held-out rows per shift:")
    print(shift_table(results, chosen, rule))
    print(
        f"  a shift separates the models when the gap is >= {rule.min_gap * 100:.0f} points and "
        f"the agent's paired test on a {rule.window_rows}-pair window would give p < {rule.alpha:g}"
    )
    if separated:
        timeline.add(
            f"shift chosen: {chosen.shift}: dense {chosen.dense:.3f} vs pruned "
            f"{chosen.pruned:.3f} ({chosen.gap * 100:+.1f} points)"
        )
    else:
        timeline.add(
            f"NO shift separates the models by {MIN_GAP * 100:.0f} points; falling back to the "
            f"strongest separation found: {chosen.shift}, {chosen.gap * 100:+.1f} points"
        )
    return ShiftChoice(results, chosen, separated, rule)
