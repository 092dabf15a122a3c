"""Input shifts, measured offline on both ONNX models; choosing the one to replay."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pruneguard.demo.config import (
    AGENT_MARGIN,
    AGREEMENT_MARGIN,
    MIN_GAP,
    SEED,
    DemoConfig,
    Timeline,
)

__all__ = [
    "SHIFTS",
    "TEXT_SHIFTS",
    "Detectable",
    "Disagreeing",
    "Rule",
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
    "typos": ("fraction of letters replaced at random", _per_text(_typos), (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)),
    "drop-words": ("fraction of words dropped", _per_text(_drop_words), (0.2, 0.35, 0.5, 0.65)),
    "truncate": ("fraction of words cut from the end", _per_text(_truncate), (0.25, 0.5, 0.75, 0.9)),
    "distract": ("small-talk words put in front", _per_text(_distract), (2, 4, 8, 12, 16, 24)),
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
    """Both models on the same shifted rows: accuracies, the discordant pairs, agreement."""

    shift: Shift
    dense: float
    pruned: float
    rows: int
    dense_only: int = 0  # rows only the dense model got right
    pruned_only: int = 0  # rows only the pruned model got right
    agree: int = 0  # rows both models gave the same class

    @property
    def gap(self) -> float:
        return self.dense - self.pruned

    @property
    def agreement(self) -> float:
        return self.agree / self.rows if self.rows else float("nan")

    def window_p(self, window_rows: int, tolerance: float) -> float:
        """The agent's paired test (McNemar, non-inferiority margin ``tolerance``) on a window
        of ``window_rows`` labelled pairs with these proportions: would it see the gap?"""
        from pruneguard.agent.checks import mcnemar_p_value

        scale = window_rows / self.rows
        b, c = round(self.pruned_only * scale), round(self.dense_only * scale)
        return mcnemar_p_value(b, c, window_rows, tolerance)

    def agreement_p(self, window_rows: int, floor: float) -> float:
        """The agent's label-free test (one-sided binomial, agreement below ``floor``) on a
        window of ``window_rows`` pairs that agree as often as these rows did."""
        from pruneguard.agent.checks import agreement_p_value

        return agreement_p_value(round(self.agreement * window_rows), window_rows, floor)


class Scorer(Protocol):
    """One ONNX model as the service runs it, offline: the class it gives each row."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def measure_shifts(
    models: Mapping[str, Scorer], x: np.ndarray, y: np.ndarray, *, draws: int,
    kinds: ShiftKinds = SHIFTS, seed: int = SEED,
) -> list[ShiftResult]:  # fmt: skip
    """Accuracy and agreement of ``models["dense"]`` and ``models["pruned"]`` on every shift of
    ``kinds``, over ``draws`` random draws of the rows (the same draws for both)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.concatenate([x] * draws), np.concatenate([y] * draws)
    results = []
    for kind, (_, _, strengths) in kinds.items():
        for strength in strengths:
            shift = Shift(kind, strength)
            shifted = shift.apply(xs, rng)
            dense, pruned = (np.asarray(models[k].predict(shifted)) for k in ("dense", "pruned"))
            results.append(_paired(shift, dense, pruned, ys))
    return results


def _paired(shift: Shift, dense: np.ndarray, pruned: np.ndarray, y: np.ndarray) -> ShiftResult:
    dense_ok, pruned_ok = dense == y, pruned == y
    return ShiftResult(
        shift,
        dense=float(dense_ok.mean()),
        pruned=float(pruned_ok.mean()),
        rows=len(y),
        dense_only=int((dense_ok & ~pruned_ok).sum()),
        pruned_only=int((pruned_ok & ~dense_ok).sum()),
        agree=int((dense == pruned).sum()),
    )


class Rule(Protocol):
    """When a measured shift counts as separating the models, for the check that will decide
    (:class:`Detectable` with labels, :class:`Disagreeing` without)."""

    @property
    def window_rows(self) -> int: ...

    @property
    def alpha(self) -> float: ...

    def __call__(self, r: ShiftResult) -> bool: ...

    def p(self, r: ShiftResult) -> float: ...

    def separation(self, r: ShiftResult) -> float: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Detectable:
    """Labelled traffic: the pruned model must trail by ``min_gap`` accuracy, clearly enough
    for the agent's paired test (McNemar) on one window."""

    min_gap: float = MIN_GAP
    window_rows: int = 600  # labelled pairs the agent's window is expected to hold
    tolerance: float = 0.01  # the agent's margin plus the gap the manifest expects
    alpha: float = 1e-3  # 10x stricter than the agent's 0.01: it must fail 3 ticks running

    def __call__(self, r: ShiftResult) -> bool:
        return r.gap >= self.min_gap and self.p(r) < self.alpha

    def p(self, r: ShiftResult) -> float:
        return r.window_p(self.window_rows, self.tolerance)

    def separation(self, r: ShiftResult) -> float:
        return r.gap

    def describe(self) -> str:
        return (
            f"the pruned model trails by at least {self.min_gap * 100:.0f} accuracy points, "
            f"clearly enough for the agent's paired test (McNemar) on a {self.window_rows}-pair "
            f"window (p < {self.alpha:g})"
        )


@dataclass(frozen=True)
class Disagreeing:
    """Unlabelled traffic: the models must agree at least ``min_fall`` less often than the
    offline agreement the manifest records, clearly enough for the agent's label-free test
    (agreement below offline − its margin, one-sided binomial) on one window."""

    expected: float  # metrics.agreement_with_baseline of the pruned manifest
    margin: float = AGREEMENT_MARGIN
    min_fall: float = MIN_GAP
    window_rows: int = 600
    alpha: float = 1e-3

    def __call__(self, r: ShiftResult) -> bool:
        return self.separation(r) >= self.min_fall and self.p(r) < self.alpha

    def p(self, r: ShiftResult) -> float:
        return r.agreement_p(self.window_rows, max(self.expected - self.margin, 0.0))

    def separation(self, r: ShiftResult) -> float:
        return self.expected - r.agreement

    def describe(self) -> str:
        return (
            f"the models agree at least {self.min_fall * 100:.0f} points less often than offline "
            f"({self.expected:.3f}), clearly enough for the agent's label-free agreement test on "
            f"a {self.window_rows}-pair window (p < {self.alpha:g})"
        )


def choose_shift(
    results: Sequence[ShiftResult], rule: Rule | None = None
) -> tuple[ShiftResult, bool]:
    """The mildest shift (highest dense accuracy) among each kind's first strength at which
    the models clearly separate (``rule``, by default :class:`Detectable`); else the largest
    separation found, and False."""
    rule = rule or Detectable()
    firsts = []
    for kind in dict.fromkeys(r.shift.kind for r in results):
        found = [r for r in results if r.shift.kind == kind and rule(r)]
        if found:
            firsts.append(found[0])  # results run from mild to strong within a kind
    if firsts:
        return max(firsts, key=lambda r: r.dense), True
    return max(results, key=rule.separation), False


def shift_table(results: Sequence[ShiftResult], chosen: ShiftResult, rule: Rule) -> str:
    head = f"  {'shift':<11}{'strength':>9}{'dense':>9}{'pruned':>9}{'gap (pts)':>11}"
    lines = [f"{head}{'agreement':>11}{'window p':>11}"]
    for r in results:
        mark = "  <- chosen" if r is chosen else ""
        lines.append(
            f"  {r.shift.kind:<11}{r.shift.strength:>9g}{r.dense:>9.3f}{r.pruned:>9.3f}"
            f"{r.gap * 100:>+11.1f}{r.agreement:>11.3f}{rule.p(r):>11.1e}{mark}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ShiftChoice:
    results: list[ShiftResult]
    chosen: ShiftResult
    separated: bool  # False: nothing separated; ``chosen`` is the largest separation found
    rule: Rule
    labelled: bool  # whether the shifted traffic comes with labels


def pick_shift(
    config: DemoConfig,
    results: list[ShiftResult],
    pruned: dict[str, Any],
    timeline: Timeline,
    *,
    labelled: bool = True,
) -> ShiftChoice:
    """Choose among the measured shifts with the check that will decide, the agent's own
    window and margin, and say so. With ``labelled`` the shifted traffic gets labels and the
    paired accuracy test decides; without, the label-free agreement test does."""
    m = pruned["metrics"]
    rule: Rule
    if labelled:
        gap = max(m["baseline_accuracy"] - m["accuracy"], 0.0)
        rule = Detectable(window_rows=config.window_rows, tolerance=gap + AGENT_MARGIN)
    else:
        rule = Disagreeing(float(m["agreement_with_baseline"]), window_rows=config.window_rows)
    chosen, separated = choose_shift(results, rule)
    print(f"both ONNX models on {results[0].rows} held-out rows per shift:")
    print(shift_table(results, chosen, rule))
    print(f"  a shift separates the models when {rule.describe()}")
    what = (
        f"dense {chosen.dense:.3f} vs pruned {chosen.pruned:.3f} ({chosen.gap * 100:+.1f} "
        f"points), agreement {chosen.agreement:.3f}"
    )
    if separated:
        timeline.add(f"shift chosen: {chosen.shift}: {what}")
    else:
        timeline.add(
            f"NO shift separates the models ({rule.describe()}); falling back to the strongest "
            f"separation found: {chosen.shift}: {what}"
        )
    return ShiftChoice(results, chosen, separated, rule, labelled)
