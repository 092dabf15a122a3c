"""Shadow comparison math and the bounded, never-blocking shadow queue."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel, Prediction
from pruneguard.deploy.shadow import ShadowJob, ShadowRunner, compare
from pruneguard.registry.tasks import Classification


def _pred(probs: list[list[float]], latency: float = 0.001) -> Prediction:
    p = np.asarray(probs, dtype=np.float32)
    return Prediction(classes=p.argmax(axis=1), outputs=p, latency_s=latency)


def test_compare_agreement_and_total_variation() -> None:
    champion = _pred([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], latency=0.002)
    shadow = _pred([[0.6, 0.4, 0.0], [0.5, 0.3, 0.2], [0.0, 0.0, 1.0]], latency=0.005)
    result = compare(champion, shadow)
    assert result.agree.tolist() == [True, False, False]
    np.testing.assert_allclose(result.distance, [0.3, 0.3, 1.0], atol=1e-6)
    assert result.agreement == pytest.approx(1 / 3)
    assert (result.champion_latency_s, result.shadow_latency_s) == (0.002, 0.005)


def test_compare_identical_models_is_zero_distance() -> None:
    p = _pred([[0.25, 0.25, 0.5]])
    assert compare(p, p).distance.tolist() == [0.0]


def test_compare_refuses_different_class_counts() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        compare(_pred([[0.5, 0.5]]), _pred([[0.2, 0.3, 0.5]]))


class _BlockingModel:
    """A shadow whose predict() waits until released: the worker thread is stuck on it."""

    tag = "digits:slow"
    version = "slow"
    task = Classification()

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def predict(self, batch: np.ndarray) -> Prediction:
        self.started.set()
        self.release.wait(30)
        return _pred([[0.5, 0.5]] * len(batch))


def _job(shadow: object) -> ShadowJob:
    return ShadowJob(("r",), 0.0, np.zeros((1, 2), np.float32), _pred([[0.9, 0.1]]), "v1", shadow)  # type: ignore[arg-type]


def test_full_queue_drops_and_counts_without_blocking() -> None:
    reg = CollectorRegistry()
    runner = ShadowRunner(
        model="digits", metrics=ServingMetrics(reg), queue_size=2, sample_rate=1.0
    )
    slow = _BlockingModel()
    runner.start()
    try:
        assert runner.submit(_job(slow))
        assert slow.started.wait(10)  # the worker holds job 1; the queue is empty again
        accepted = [runner.submit(_job(slow)) for _ in range(5)]  # returns at once, never waits
        assert accepted == [True, True, False, False, False]
        dropped = reg.get_sample_value(
            "pruneguard_shadow_dropped_total", {"model": "digits", "reason": "queue_full"}
        )
        assert dropped == 3
    finally:
        slow.release.set()
        runner.stop()
    agree = reg.get_sample_value(
        "pruneguard_shadow_comparisons_total", {"model": "digits", "outcome": "agree"}
    )
    assert agree == 3  # the three accepted jobs ran once released


def test_worker_runs_real_models_and_reports(artifact_factory: Any, tmp_path: Path) -> None:
    champion = LoadedModel.load(artifact_factory(seed=1), tag="digits:c")
    shadow = LoadedModel.load(artifact_factory(seed=2), tag="digits:s")
    reg = CollectorRegistry()
    seen: list[tuple[str, float]] = []
    runner = ShadowRunner(
        model="digits",
        metrics=ServingMetrics(reg),
        queue_size=8,
        sample_rate=1.0,
        on_result=lambda job, answer, result: seen.append((job.request_ids[0], result.agreement)),
    )
    batch = np.random.default_rng(0).uniform(0, 16, size=(16, 1, 8, 8)).astype(np.float32)
    answer = champion.predict(batch)
    result = runner.run(
        ShadowJob(tuple(f"r{i}" for i in range(16)), 0.0, batch, answer, "c", shadow)
    )
    assert result is not None
    assert seen == [("r0", result.agreement)]
    disagree = reg.get_sample_value(
        "pruneguard_shadow_comparisons_total", {"model": "digits", "outcome": "disagree"}
    )
    agree = reg.get_sample_value(
        "pruneguard_shadow_comparisons_total", {"model": "digits", "outcome": "agree"}
    )
    assert agree is not None and disagree is not None
    assert agree + disagree == 16 and disagree > 0  # different seeds: measurably different models
    assert (
        reg.get_sample_value("pruneguard_shadow_probability_distance_count", {"model": "digits"})
        == 16
    )
    assert (
        reg.get_sample_value(
            "pruneguard_predictions_total", {"model": "digits", "variant": "shadow", "version": "s"}
        )
        == 16
    )


def test_sampling_rate_is_respected() -> None:
    import random

    runner = ShadowRunner(
        model="m",
        metrics=ServingMetrics(CollectorRegistry()),
        queue_size=1,
        sample_rate=0.25,
        rng=random.Random(0),
    )
    hits = sum(runner.should_sample() for _ in range(4000))
    assert 800 < hits < 1200
    assert not ShadowRunner(
        model="m", metrics=ServingMetrics(CollectorRegistry()), queue_size=1, sample_rate=0.0
    ).should_sample()


class _CountingModel:
    """A shadow that records the batch sizes it was called with (answers class 1)."""

    tag = "digits:count"
    version = "count"
    task = Classification()

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    def predict(self, batch: np.ndarray) -> Prediction:
        if self.gate is not None:
            self.gate.wait(30)
        self.calls.append(len(batch))
        return _pred([[0.2, 0.8]] * len(batch))


def test_jobs_that_pile_up_run_as_one_batch_and_report_per_job() -> None:
    gate = threading.Event()
    first, rest = _CountingModel(gate), _CountingModel()
    reports: list[tuple[tuple[str, ...], list[bool]]] = []
    runner = ShadowRunner(
        model="digits",
        metrics=ServingMetrics(CollectorRegistry()),
        queue_size=16,
        sample_rate=1.0,
        on_result=lambda job, answer, result: reports.append(
            (job.request_ids, result.agree.tolist())
        ),
    )

    def job(ids: tuple[str, ...], champion_class: int, shadow: object) -> ShadowJob:
        probs = [[0.9, 0.1] if champion_class == 0 else [0.1, 0.9]] * len(ids)
        return ShadowJob(ids, 0.0, np.zeros((len(ids), 2), np.float32), _pred(probs), "v1", shadow)  # type: ignore[arg-type]

    runner.start()
    try:
        runner.submit(job(("a",), 0, first))  # the worker blocks on this one (or takes all)
        runner.submit(job(("b", "c"), 1, rest))
        runner.submit(job(("d",), 0, rest))
        runner.submit(job(("e",), 1, rest))
        gate.set()
    finally:
        runner.stop()
    assert first.calls == [1]
    assert rest.calls == [4]  # the three jobs that piled up: one session call
    assert reports == [
        (("a",), [False]),
        (("b", "c"), [True, True]),
        (("d",), [False]),
        (("e",), [True]),
    ]
