"""Drift on real images (scikit-learn's 8×8 digits), summarised by the feature extractor."""

from __future__ import annotations

import numpy as np
import pytest

from pruneguard.agent.drift import column_drift, holm
from pruneguard.agent.features import extract


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    # a fixed "model": the class whose mean image is nearest (same rule for every window)
    means = np.stack([data.data[data.target == k].mean(axis=0) for k in range(10)])
    predictions = np.argmin(((data.data[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    return data.data.astype(np.float32), predictions


def _drift(ref: np.ndarray, cur: np.ndarray, ref_pred: np.ndarray, cur_pred: np.ndarray):
    names, ref_f = extract(ref, (1, 8, 8))
    _, cur_f = extract(cur, (1, 8, 8))
    return column_drift(
        ref_f,
        cur_f,
        names,
        reference_predictions=ref_pred,
        current_predictions=cur_pred,
        alpha=0.05,
    )


def test_image_summary_has_tens_of_columns_with_the_right_values() -> None:
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, 16, size=(5, 64)).astype(np.float32)
    names, summary = extract(rows, (1, 8, 8))
    assert len(names) == 21 and summary.shape == (5, 21)
    assert summary[:, names.index("c0_mean")] == pytest.approx(rows.mean(axis=1), rel=1e-5)
    assert summary[:, names.index("c0_row0")] == pytest.approx(rows[:, :8].mean(axis=1), rel=1e-5)
    wide_names, wide = extract(rng.normal(size=(3, 3 * 32 * 32)).astype(np.float32), (3, 32, 32))
    assert len(wide_names) == 63 and wide.shape == (3, 63)
    flat_names, _ = extract(rng.normal(size=(2, 1000)).astype(np.float32), (1000,))
    assert len(flat_names) == 64


def test_holm_controls_the_family() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5], 0.05).tolist() == [True, False, False, False]
    assert holm([0.001, 0.01, 0.02], 0.05).tolist() == [True, True, True]
    assert holm([], 0.05).tolist() == []


def test_false_alarm_rate_on_unshifted_windows_is_at_most_ten_percent(digits) -> None:
    images, predictions = digits
    rng = np.random.default_rng(1)
    order = rng.permutation(len(images))
    ref_idx, pool = order[:400], order[400:]
    alarms, raw_alarms = 0, 0
    for _ in range(60):
        idx = rng.choice(pool, size=150, replace=False)
        result = _drift(images[ref_idx], images[idx], predictions[ref_idx], predictions[idx])
        alarms += result.detected
        raw_alarms += any(c.p_value < 0.05 for c in result.columns)
    assert alarms / 60 <= 0.10
    # without the correction the same windows cry wolf far more often
    assert raw_alarms > alarms


@pytest.mark.parametrize(
    "shift",
    [
        lambda x, rng: np.clip(x * 1.4, 0, 16),  # brighter strokes
        lambda x, rng: np.roll(x.reshape(-1, 8, 8), 2, axis=2).reshape(-1, 64),  # moved right
        lambda x, rng: np.clip(x + rng.uniform(0, 4, x.shape), 0, 16),  # noise
    ],
)
def test_shifted_inputs_are_detected(digits, shift) -> None:
    images, predictions = digits
    rng = np.random.default_rng(2)
    order = rng.permutation(len(images))
    ref, cur = order[:400], order[400:600]
    result = _drift(images[ref], shift(images[cur], rng), predictions[ref], predictions[cur])
    assert result.detected and result.share > 0.1
    assert result.to_dict()["drifted_columns"]


def test_p_values_are_evidentlys(digits) -> None:
    """The tick's KS p-values equal those in Evidently's DataDriftPreset(num_method="ks")."""
    import pandas as pd

    from pruneguard.agent.drift import evidently_drift_report

    images, _ = digits
    names, feats = extract(images[:600], (1, 8, 8))
    cols = ["c0_mean", "c0_std", "c0_row3", "c0_col4"]
    picked = feats[:, [names.index(c) for c in cols]]
    ref = pd.DataFrame(picked[:300], columns=cols)
    cur = pd.DataFrame(picked[300:] * 1.1, columns=cols)
    ours = column_drift(ref.to_numpy(), cur.to_numpy(), cols, alpha=0.05)
    snapshot = evidently_drift_report(ref, cur, cols, alpha=0.05)
    theirs = {
        m["config"]["column"]: m["value"]
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    assert theirs == pytest.approx({c.column: c.p_value for c in ours.columns}, rel=1e-9)
