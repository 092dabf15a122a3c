"""Drift of the inputs (summarised by :mod:`agent.features`) and of the predictions.

Every tick computes, per column, the two-sample Kolmogorov–Smirnov p-value (numeric
features) and the chi-square p-value of a contingency table (the predicted class) against
the champion's ``reference.parquet``: the tests Evidently runs with ``num_method="ks"``.
With 20-odd tests per window, five would fire by chance about two windows in three at
alpha = 0.05, so the p-values go through Holm's step-down correction, which keeps the chance
of *any* false alarm in a window at or below ``alpha``. The drift share is the fraction of
columns that stay significant after the correction.

The saved report is Evidently's ``DataDriftPreset`` (same tests, Bonferroni threshold
``alpha / columns``), built by :func:`evidently_drift_report`: its HTML rendering costs
seconds per report, so it runs when a report is due, not on every tick.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PREDICTION_COLUMN",
    "ColumnDrift",
    "DriftResult",
    "column_drift",
    "evidently_drift_report",
    "holm",
]

PREDICTION_COLUMN = "prediction"
EXACT_KS_MAX = 1_000_000  # reference rows × window rows


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    test: str
    statistic: float
    p_value: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    columns: tuple[ColumnDrift, ...]
    share: float
    detected: bool
    alpha: float
    n_reference: int
    n_current: int

    @property
    def min_p_value(self) -> float | None:
        return min((c.p_value for c in self.columns), default=None)

    @property
    def prediction(self) -> ColumnDrift | None:
        return next((c for c in self.columns if c.column == PREDICTION_COLUMN), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "detected": self.detected,
            "alpha": self.alpha,
            "correction": "holm",
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "drifted_columns": [c.column for c in self.columns if c.drifted],
            "columns": {
                c.column: {"test": c.test, "statistic": c.statistic, "p_value": c.p_value}
                for c in self.columns
            },
        }


def holm(p_values: Sequence[float], alpha: float) -> np.ndarray:
    """Holm–Bonferroni: which hypotheses are rejected with family-wise error <= ``alpha``."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    rejected = np.zeros(m, dtype=bool)
    for rank, idx in enumerate(np.argsort(p, kind="stable")):
        if p[idx] > alpha / (m - rank):
            break
        rejected[idx] = True
    return rejected


def _chi2_p(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    categories = np.union1d(reference, current)
    if categories.size < 2:
        return 0.0, 1.0
    table = np.array(
        [[np.sum(sample == cat) for cat in categories] for sample in (reference, current)]
    )
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def column_drift(
    reference: np.ndarray,
    current: np.ndarray,
    names: Sequence[str],
    *,
    reference_predictions: np.ndarray | None = None,
    current_predictions: np.ndarray | None = None,
    alpha: float = 0.05,
) -> DriftResult:
    """KS per numeric column (+ chi-square on predictions), Holm-corrected at ``alpha``."""
    from scipy import stats

    results: list[tuple[str, str, float, float]] = []
    # scipy's "auto" computes the exact distribution up to 10,000 rows: seconds per column
    # for a full window; the asymptotic p-value is accurate at these sizes.
    method = "auto" if len(reference) * len(current) <= EXACT_KS_MAX else "asymp"
    for j, name in enumerate(names):
        ks = stats.ks_2samp(reference[:, j], current[:, j], method=method)
        results.append((name, "ks", float(ks.statistic), float(ks.pvalue)))
    if reference_predictions is not None and current_predictions is not None:
        stat, p = _chi2_p(np.asarray(reference_predictions), np.asarray(current_predictions))
        results.append((PREDICTION_COLUMN, "chisquare", stat, p))
    rejected = holm([r[3] for r in results], alpha)
    columns = tuple(
        ColumnDrift(name, test, stat, p, bool(flag))
        for (name, test, stat, p), flag in zip(results, rejected, strict=True)
    )
    share = float(rejected.mean()) if rejected.size else 0.0
    return DriftResult(columns, share, bool(rejected.any()), alpha, len(reference), len(current))


def evidently_drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str], *, alpha: float
) -> Any:
    """Evidently's ``DataDriftPreset`` (KS / chi-square p-values, Bonferroni threshold)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    categorical = [PREDICTION_COLUMN] if PREDICTION_COLUMN in current.columns else []
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=categorical)
    tests = max(len(numeric) + len(categorical), 1)
    report = Report(
        [DataDriftPreset(num_method="ks", cat_method="chisquare", threshold=alpha / tests)]
    )
    with warnings.catch_warnings():
        # Evidently correlates columns; a constant one (e.g. a dark image's 10% quantile)
        # divides by a zero standard deviation and numpy warns. Its drift test is unaffected.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        return report.run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
