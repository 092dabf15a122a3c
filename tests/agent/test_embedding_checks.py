"""The agent on an embedding model: the cosine check, its false-alarm rate on unshifted
windows of a real pruned text model's cosines, no rollback over 1,000 stationary ticks, a
rollback when the cosine falls, and a window read from a served text model's prediction log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from agent_sim import cosine_ticks, cosine_windows
from prometheus_client import CollectorRegistry
from serving_support import Models, wait_for

from pruneguard.agent.analysis import analyse, load_reference
from pruneguard.agent.checks import CheckConfig, cosine_check
from pruneguard.agent.policy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    PolicyConfig,
)
from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel
from pruneguard.deploy.runtime import Replica
from pruneguard.pruning.text import load_paraphrases
from pruneguard.registry.artifact import read_manifest
from pruneguard.registry.predictions import PredictionLog, read_window

CHECKS = CheckConfig()
POLICY = PolicyConfig()


def _offline_cosines(dense: Path, pruned: Path) -> tuple[np.ndarray, float]:
    """Per-sentence cosines of the pruned vs the dense model on the held-out sentences the
    manifest's mean_cosine_to_dense was measured on, and that figure."""
    manifest = read_manifest(pruned)
    pairs = load_paraphrases()[:24]  # tests/support/hf_models.tiny_recipe: eval_pairs 24
    texts = [a for a, _ in pairs] + [b for _, b in pairs]
    models = [LoadedModel.load(path, tag=f"texts:{path.name}") for path in (pruned, dense)]
    champion, shadow = (m.predict(m.encode(texts)[0]) for m in models)
    paired = models[0].task.compare(champion.decoded, shadow.decoded)
    return paired.similarity, float(manifest["metrics"]["mean_cosine_to_dense"])


@pytest.fixture(scope="module")
def offline(text_artifacts: tuple[Path, Path]) -> tuple[np.ndarray, float]:
    return _offline_cosines(*text_artifacts)


def test_served_cosines_reproduce_the_offline_figure(offline: tuple[np.ndarray, float]) -> None:
    cosines, expected = offline
    assert abs(float(cosines.mean()) - expected) < 1e-3  # ONNX vs torch, same sentences


def test_cosine_check_outcomes() -> None:
    rng = np.random.default_rng(0)
    good = np.clip(rng.normal(0.97, 0.01, 400), -1, 1)
    assert cosine_check(good, expected=0.97, config=CHECKS).outcome == PASS
    assert cosine_check(good - 0.05, expected=0.97, config=CHECKS).outcome == FAIL
    few = cosine_check(good[:10], expected=0.97, config=CHECKS)
    assert few.outcome == INCONCLUSIVE and "min_pairs" in few.reason
    assert cosine_check(good, expected=None, config=CHECKS).outcome == INCONCLUSIVE


def _windows(rng: np.random.Generator, pool: np.ndarray, n: int, shift: float = 0.0) -> list:
    return cosine_windows(rng, pool, n, size=CHECKS.min_pairs, shift=shift)


def test_false_alarms_on_unshifted_windows_stay_under_ten_percent(
    offline: tuple[np.ndarray, float],
) -> None:
    cosines, expected = offline
    rng = np.random.default_rng(1)
    outcomes = [
        cosine_check(w, expected=expected, config=CHECKS).outcome
        for w in _windows(rng, cosines, 200)
    ]
    assert outcomes.count(FAIL) / len(outcomes) <= 0.10


def _ticks(windows: list, expected: float) -> list[str]:
    return cosine_ticks(windows, expected, checks=CHECKS, policy=POLICY)


def test_no_rollback_over_a_thousand_stationary_ticks(offline: tuple[np.ndarray, float]) -> None:
    cosines, expected = offline
    rng = np.random.default_rng(2)
    assert _ticks(_windows(rng, cosines, 1000), expected).count("rollback") == 0


def test_a_falling_cosine_rolls_back_after_threshold_ticks(
    offline: tuple[np.ndarray, float],
) -> None:
    cosines, expected = offline
    rng = np.random.default_rng(3)
    actions = _ticks(_windows(rng, cosines, 10, shift=0.05), expected)
    assert actions.index("rollback") == POLICY.threshold - 1


def test_a_window_from_a_served_text_model(text_models: Models) -> None:
    """Texts served through a Replica land in the prediction log; the window's analysis runs
    the cosine check (paired champion/shadow embeddings) and drift on the embeddings."""
    config = ServeConfig(
        model="texts", home=text_models.home, log_flush_s=0.05, shadow_mode="thread"
    )
    replica = Replica(
        config, registry=text_models.registry, sink=PredictionLog(text_models.registry.engine),
        metrics=ServingMetrics(CollectorRegistry()),
    )  # fmt: skip
    texts = [a for a, _ in load_paraphrases()[:60]] * 3
    replica.start()
    try:
        for i in range(0, len(texts), 20):
            replica.predict(texts=texts[i : i + 20])
        frame = wait_for(
            lambda: (f,) if len(f := read_window(text_models.registry.engine, "texts", since_ts=0)) == 2 * len(texts) else None
        )[0]  # fmt: skip
    finally:
        replica.stop()
    path = text_models.registry.path(text_models.champion)
    manifest = read_manifest(path)
    config_ = CheckConfig(min_pairs=100, min_drift_rows=100)
    analysis, window = analyse(
        frame, model="texts", champion=text_models.champion, shadow=text_models.shadow,
        manifest=manifest, reference=load_reference(path / "reference.parquet", None),
        config=config_,
    )  # fmt: skip
    checks = {c.name: c for c in analysis.checks}
    assert set(checks) == {"cosine", "drift"}
    assert checks["cosine"].samples == len(texts)
    assert checks["cosine"].outcome == PASS, checks["cosine"].reason
    assert analysis.mean_cosine is not None and analysis.mean_cosine > 0.5
    assert checks["drift"].outcome in (PASS, FAIL) and window.features.shape[0] == len(texts)
    assert analysis.samples["labelled"] == 0


def test_unavailable_names_every_check() -> None:
    from pruneguard.agent.analysis import unavailable

    assert {c.name for c in unavailable("texts", "db down").checks} >= {"cosine", "accuracy_gap"}
