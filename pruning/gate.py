"""Whether a pruned (or int8) version may become champion: the recipe's acceptance budget,
decided from the manifest's own figures against the dense model.

Deciding only (a pure function of the metrics and the budget); registering and promoting are
the CLI's (``pruning/cli.py``), which records the decision in the registry's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_ACCURACY_DROP",
    "DEFAULT_MIN_SPEEDUP",
    "Acceptance",
    "decide",
    "decide_quantized",
]

DEFAULT_MAX_ACCURACY_DROP = 0.01  # one accuracy point, when the recipe sets no budget
DEFAULT_MIN_SPEEDUP = 1.0  # faster than dense as served, at every batch size measured
_EPSILON = 1e-9  # 0.9750 - 0.9650 is a 1-point drop, not 1.0000001


@dataclass(frozen=True)
class Acceptance:
    """The gate's verdict, as it goes into the manifest (``pruning.acceptance``)."""

    passed: bool
    reasons: tuple[str, ...]  # one line per missed condition; empty when passed
    max_accuracy_drop: float
    min_speedup: float
    budget: str  # "recipe" or "default": where the budget came from

    @property
    def reason(self) -> str:
        """One line for stderr, ``--json`` and the registry event."""
        if self.passed:
            return (
                f"meets the {self.budget} budget: accuracy within "
                f"{self.max_accuracy_drop * 100:.2f} points of dense, >= {self.min_speedup:.2f}× "
                "its speed as served"
            )
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons), "reason": self.reason}


def decide(
    metrics: Mapping[str, Any],
    *,
    max_accuracy_drop: float | None = None,
    min_speedup: float | None = None,
) -> Acceptance:
    """The verdict for a pruned version's ``metrics`` (``accuracy``, ``baseline_accuracy``,
    ``speedup`` per batch size); a budget left ``None`` takes the default."""
    budget = "recipe" if max_accuracy_drop is not None or min_speedup is not None else "default"
    drop_budget = DEFAULT_MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop
    speed_budget = DEFAULT_MIN_SPEEDUP if min_speedup is None else min_speedup
    reasons = []
    if "accuracy" in metrics and "baseline_accuracy" in metrics:
        accuracy, base = float(metrics["accuracy"]), float(metrics["baseline_accuracy"])
        if base - accuracy > drop_budget + _EPSILON:
            reasons.append(
                f"accuracy {accuracy:.4f} is {(base - accuracy) * 100:.2f} points below the "
                f"dense {base:.4f}; accept.max_accuracy_drop allows {drop_budget * 100:.2f}"
            )
    threads = metrics.get("latency_setup", {}).get("ort_threads")
    served = f", {threads} ORT thread{'s' if threads != 1 else ''}" if threads else ""
    for batch, speedup in sorted(metrics.get("speedup", {}).items(), key=lambda kv: int(kv[0])):
        if float(speedup) < speed_budget - _EPSILON:
            reasons.append(
                f"{float(speedup):.2f}× the dense speed at batch {batch} as served{served}; "
                f"accept.min_speedup is {speed_budget:.2f}×"
            )
    return Acceptance(not reasons, tuple(reasons), drop_budget, speed_budget, budget)


def decide_quantized(
    metrics: Mapping[str, Any],
    *,
    min_similarity: float,
    max_accuracy_drop: float | None = None,
    min_speedup: float | None = None,
) -> Acceptance:
    """The verdict for an int8 version: the same budget against the dense model as
    :func:`decide`, and two conditions of its own: it must be faster than its fp32 parent as
    served (``speedup_over_parent``, every batch size), and answer as the parent does
    (``parity_to_parent.similarity_mean`` at least ``min_similarity``)."""
    base = decide(metrics, max_accuracy_drop=max_accuracy_drop, min_speedup=min_speedup)
    reasons = list(base.reasons)
    over_parent = metrics.get("speedup_over_parent", {})
    for batch, speedup in sorted(over_parent.items(), key=lambda kv: int(kv[0])):
        if float(speedup) < 1.0 - _EPSILON:
            reasons.append(
                f"int8 is {float(speedup):.2f}× its fp32 parent's speed at batch {batch} as "
                "served: not faster, so not worth serving; keep the fp32 pruned version"
            )
    similarity = float(metrics.get("parity_to_parent", {}).get("similarity_mean", 0.0))
    if similarity < min_similarity - _EPSILON:
        reasons.append(
            f"int8 answers follow the fp32 parent's with mean similarity {similarity:.4f}; "
            f"quantize.min_similarity is {min_similarity:.4f}"
        )
    return Acceptance(not reasons, tuple(reasons), base.max_accuracy_drop, base.min_speedup,
                      base.budget)  # fmt: skip
