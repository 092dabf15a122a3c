"""Input shifts, measured offline on both ONNX models; choosing the one to replay."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pruneguard.demo.config import AGENT_MARGIN, MIN_GAP, SEED, DemoConfig, Timeline

__all__ = [
    "SHIFTS",
    "TEXT_SHIFTS",
    "Detectable",
    "Scorer",
    "Shift",
    "ShiftChoice",
    "ShiftKinds",
    "ShiftResult",
    "choose_shift",
    "measure_shifts",
    "pick_shift",
    "shift_table",
]


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


def _pixels(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """A digits shift that keeps the pixel range (0..16) and dtype."""

    def shifted(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
        return np.clip(fn(x, s, rng), 0.0, 16.0).astype(np.float32)

    return shifted


# kind -> (what it does, the function, strengths from mild to strong)
ShiftKinds = Mapping[str, tuple[str, Callable[..., np.ndarray], tuple[float, ...]]]

SHIFTS: ShiftKinds = {
    "noise": ("gaussian pixel noise, sigma (pixels are 0..16)", _pixels(_noise), (1, 2, 3, 4, 5, 6, 8)),
    "dropout": ("fraction of pixels set to 0", _pixels(_dropout), (0.1, 0.2, 0.3, 0.4, 0.5)),
    "blur": ("blend with a 3x3 box blur", _pixels(_blurred), (0.25, 0.5, 0.75, 1.0)),
    "contrast": ("pixels scaled by", _pixels(_contrast), (0.8, 0.6, 0.5, 0.4, 0.3)),
    "translate": ("moved right by pixels", _pixels(_translate), (1, 2)),
}  # fmt: skip


# --- texts (an object array of str in, one out) ----------------------------------------------


def _per_text(fn: Callable[[str, float, np.random.Generator], str]) -> Callable[..., np.ndarray]:
    def shifted(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
        return np.asarray([fn(str(t), s, rng) for t in x], dtype=object)

    return shifted


def _typos(text: str, s: float, rng: np.random.Generator) -> str:
    chars = list(text)
    for i in np.flatnonzero(rng.random(len(chars)) < s):
        if chars[i].isalpha():
            chars[i] = string.ascii_lowercase[rng.integers(26)]
    return "".join(chars)


def _drop_words(text: str, s: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w, r in zip(words, rng.random(len(words)), strict=True) if r >= s]
    return " ".join(kept or words[:1])


def _truncate(text: str, s: float, rng: np.random.Generator) -> str:
    words = text.split()
    return " ".join(words[: max(1, round(len(words) * (1 - s)))])


# topic-neutral small talk, as a chat front-end might prepend to what the user typed
_FILLER = ("well", "so", "hey", "um", "okay", "you", "know", "I", "mean", "like", "really",
           "just", "anyway", "listen", "honestly", "tell", "me", "something")  # fmt: skip


def _distract(text: str, s: float, rng: np.random.Generator) -> str:
    filler = [_FILLER[i] for i in rng.integers(len(_FILLER), size=int(s))]
    return " ".join([*filler, text])


TEXT_SHIFTS: ShiftKinds = {
    "typos": ("fraction of letters replaced at random", _per_text(_typos), (0.05, 0.1, 0.2, 0.3)),
    "drop-words": ("fraction of words dropped", _per_text(_drop_words), (0.2, 0.35, 0.5)),
    "truncate": ("fraction of words cut from the end", _per_text(_truncate), (0.25, 0.5, 0.75)),
    "distract": ("small-talk words put in front", _per_text(_distract), (2, 4, 8, 12)),
}  # fmt: skip
_KINDS: ShiftKinds = {**SHIFTS, **TEXT_SHIFTS}


@dataclass(frozen=True)
class Shift:
    kind: str
    strength: float

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _KINDS[self.kind][1](x, self.strength, rng)

    def __str__(self) -> str:
        return f"{self.kind} {self.strength:g} ({_KINDS[self.kind][0]})"


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


class Scorer(Protocol):
    """One ONNX model as the service runs it, offline: which rows it gets right."""

    def correct(self, x: np.ndarray, y: np.ndarray) -> np.ndarray: ...


def measure_shifts(
    models: Mapping[str, Scorer], x: np.ndarray, y: np.ndarray, *, draws: int,
    kinds: ShiftKinds = SHIFTS, seed: int = SEED,
) -> list[ShiftResult]:  # fmt: skip
    """Accuracy of ``models["dense"]`` and ``models["pruned"]`` on every shift of ``kinds``,
    over ``draws`` random draws of the rows (the same draws for both)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.concatenate([x] * draws), np.concatenate([y] * draws)
    results = []
    for kind, (_, _, strengths) in kinds.items():
        for strength in strengths:
            shift = Shift(kind, strength)
            shifted = shift.apply(xs, rng)
            dense, pruned = (models[k].correct(shifted, ys) for k in ("dense", "pruned"))
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
    for kind in dict.fromkeys(r.shift.kind for r in results):
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


@dataclass(frozen=True)
class ShiftChoice:
    results: list[ShiftResult]
    chosen: ShiftResult
    separated: bool  # False: nothing was detectable; ``chosen`` is the largest gap found
    rule: Detectable


def pick_shift(
    config: DemoConfig, results: list[ShiftResult], pruned: dict[str, Any], timeline: Timeline
) -> ShiftChoice:
    """Choose among the measured shifts with the agent's own window and margin, and say so."""
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
