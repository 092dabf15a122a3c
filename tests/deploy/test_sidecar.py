"""The sidecar process: the wire format, a real niced child that logs the requests and
runs the shadow, a child that dies, and a queue that fills while the child is stopped."""

from __future__ import annotations

import io
import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from serving_support import MODEL, Models, wait_for

from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel, Prediction
from pruneguard.deploy.shadow import ShadowJob
from pruneguard.deploy.sidecar import (
    Sidecar,
    decode_frame,
    decode_jobs,
    encode_jobs,
    read_frames,
)
from pruneguard.registry.predictions import create_tables, predictions
from pruneguard.registry.tasks import Classification


def _fake_shadow(path: Path) -> LoadedModel:
    return LoadedModel(
        tag="digits:v2", path=path, kind="dense", manifest={}, spec=None,  # type: ignore[arg-type]
        output_name="logits", task=Classification(), session=None,
    )  # fmt: skip


def _job(shadow: LoadedModel, rows: int = 1, seed: int = 0) -> ShadowJob:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(10), size=rows).astype(np.float32)
    return ShadowJob(
        request_ids=tuple(uuid.uuid4().hex for _ in range(rows)),
        ts=1234.5,
        batch=rng.uniform(0, 16, size=(rows, 1, 8, 8)).astype(np.float32),
        champion=Prediction(probs.argmax(axis=1), probs, 0.002),
        champion_version="v1",
        shadow=shadow,
    )


def test_jobs_survive_the_wire(tmp_path: Path) -> None:
    shadow = _fake_shadow(tmp_path)
    jobs = [_job(shadow, rows=3, seed=0), _job(shadow, rows=1, seed=1)]
    stream = io.BytesIO(encode_jobs(jobs) + encode_jobs(jobs[1:]))
    frames = list(read_frames(stream))
    assert len(frames) == 2
    opened: list[tuple[str, str]] = []

    def open_shadow(tag: str, path: str) -> LoadedModel:
        opened.append((tag, path))
        return shadow

    received = decode_jobs(*frames[0], open_shadow)
    assert opened == [("digits:v2", str(tmp_path))]
    assert len(received) == 2
    for sent, got in zip(jobs, received, strict=True):
        assert got.request_ids == sent.request_ids and got.shadow is shadow
        assert (got.ts, got.champion_version, got.champion.latency_s) == (1234.5, "v1", 0.002)
        np.testing.assert_array_equal(got.batch, sent.batch)
        assert got.batch.dtype == np.float32 and got.batch.shape == sent.batch.shape
        np.testing.assert_array_equal(got.champion.classes, sent.champion.classes)
        np.testing.assert_array_equal(got.champion.outputs, sent.champion.outputs)
    assert [job.request_ids for job in decode_jobs(*frames[1], open_shadow)] == [
        jobs[1].request_ids
    ]


def test_a_damaged_frame_is_refused(tmp_path: Path) -> None:
    frame = encode_jobs([_job(_fake_shadow(tmp_path), rows=2)])
    with pytest.raises(EOFError, match="ended"):
        list(read_frames(io.BytesIO(frame[:-5])))
    head, body = next(read_frames(io.BytesIO(frame)))
    with pytest.raises(ValueError, match="bytes"):
        decode_frame(head, body + b"extra")
    objects = head.replace(b'"<f4"', b'"|O"', 1)
    with pytest.raises(ValueError, match="only plain numbers"):
        decode_frame(objects, body)
    header = json.loads(head)
    header["jobs"][0][0].append("one-id-too-many")
    with pytest.raises(ValueError, match="3 rows its jobs list"):
        decode_frame(json.dumps(header).encode(), body)


@pytest.fixture
def models_on_disk(models: Models) -> tuple[Models, LoadedModel]:
    shadow = LoadedModel.load(models.registry.path(models.shadow), tag=models.shadow)
    return models, shadow


def _logged(models: Models, variant: str = "shadow") -> list[sa.Row]:
    """The prediction-log rows of ``variant``."""
    create_tables(models.registry.engine)
    with models.registry.engine.connect() as conn:
        query = sa.select(predictions).where(predictions.c.variant == variant)
        return list(conn.execute(query))


def _process(models: Models, reg: CollectorRegistry, **overrides: object) -> Sidecar:
    settings: dict[str, object] = {"model": MODEL, "home": models.home, "log_flush_s": 0.05}
    settings.update(overrides)
    restart = float(settings.pop("restart_after_s", 1.0))  # type: ignore[arg-type]
    size = settings.pop("queue_size", None)
    config = ServeConfig(**settings)  # type: ignore[arg-type]
    return Sidecar(
        config,
        metrics=ServingMetrics(reg),
        restart_after_s=restart,
        queue_size=size,  # type: ignore[arg-type]
    )


@pytest.fixture
def start(models_on_disk: tuple[Models, LoadedModel]) -> Iterator[Callable[..., Sidecar]]:
    """Start a sidecar for the test's registry (stopped at the end)."""
    started: list[Sidecar] = []

    def _start(reg: CollectorRegistry | None = None, **overrides: object) -> Sidecar:
        process = _process(models_on_disk[0], reg or CollectorRegistry(), **overrides)
        started.append(process)
        process.start()
        return process

    yield _start
    for process in started:
        process.stop()


def _kill_child(process: Sidecar) -> int:
    pid: int = wait_for(lambda: process.child_pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process.child_pid is None)
    return pid


def _dropped(reg: CollectorRegistry, reason: str) -> float:
    value = reg.get_sample_value(
        "pruneguard_shadow_dropped_total", {"model": MODEL, "reason": reason}
    )
    return float(value or 0.0)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_by_default_the_child_runs_under_sched_idle(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    _, shadow = models_on_disk
    process = start()
    pid = wait_for(lambda: process.child_pid)
    wait_for(lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE)  # the child's first step
    assert process.submit(_job(shadow, rows=2, seed=0))  # and it still does its work
    process.stop()
    assert process.child_pid is None


def test_jobs_run_in_a_niced_child_and_reach_the_prediction_log(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    models, shadow = models_on_disk
    process = start(shadow_nice=5, shadow_sched="nice")
    pid = wait_for(lambda: process.child_pid)
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, pid) == expected)  # the child's first step
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    jobs = [_job(shadow, rows=2, seed=i) for i in range(10)]
    assert all(process.submit(job) for job in jobs)
    process.stop()
    assert process.child_pid is None  # the child finished its input and exited
    rows = {row.request_id: row for row in _logged(models)}
    assert len(rows) == 20  # written before stop() returned: nothing queued is lost
    answers = shadow.predict(np.concatenate([job.batch for job in jobs])).classes
    ids = [request_id for job in jobs for request_id in job.request_ids]
    assert [rows[i].prediction for i in ids] == answers.tolist()  # the shadow's own answers
    assert {row.version for row in rows.values()} == {shadow.version}
    assert all(row.features == [] for row in rows.values())
    champion = {row.request_id: row for row in _logged(models, "champion")}
    assert set(champion) == set(rows)  # the sidecar logs the champion's rows too
    first = jobs[0]
    row = champion[first.request_ids[0]]
    assert (row.version, row.prediction) == ("v1", int(first.champion.classes[0]))
    np.testing.assert_allclose(row.features, first.batch[0].reshape(-1), rtol=1e-6)


def test_a_request_not_mirrored_is_logged_only(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    models, shadow = models_on_disk
    process = start()
    logged_only = replace(_job(shadow, rows=3), shadow=None)
    mirrored = _job(shadow, rows=1, seed=1)
    assert process.submit(logged_only) and process.submit(mirrored)
    process.stop()
    assert len(_logged(models, "champion")) == 4
    assert [row.request_id for row in _logged(models)] == list(mirrored.request_ids)


def test_a_dead_child_is_counted_and_not_restarted_before_its_time(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    shadow = models_on_disk[1]
    reg = CollectorRegistry()
    process = start(reg, restart_after_s=3600.0)
    _kill_child(process)
    assert all(process.submit(_job(shadow, seed=i)) for i in range(5))  # never raises
    wait_for(lambda: process.pending() == 0)
    assert _dropped(reg, "error") == 5 and process.spawns == 1
    lost_rows = reg.get_sample_value(
        "pruneguard_predlog_dropped_total", {"model": MODEL, "reason": "error"}
    )
    assert lost_rows == 5


def test_a_dead_child_is_replaced(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    models, shadow = models_on_disk
    process = start(restart_after_s=0.0)
    first = _kill_child(process)
    job = _job(shadow)
    assert process.submit(job)
    wait_for(lambda: _logged(models))
    assert process.spawns == 2 and process.child_pid not in (None, first)
    assert [row.request_id for row in _logged(models)] == list(job.request_ids)


def test_a_stalled_child_fills_the_queue_and_submit_drops_and_counts(
    models_on_disk: tuple[Models, LoadedModel], start: Callable[..., Sidecar]
) -> None:
    models, shadow = models_on_disk
    reg = CollectorRegistry()
    process = start(reg, queue_size=2)
    pid = wait_for(lambda: process.child_pid)
    os.kill(pid, signal.SIGSTOP)  # reads nothing: the pipe fills, then the queue
    try:
        accepted = sum(process.submit(_job(shadow, seed=i)) for i in range(2000))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0 < accepted < 2000
    assert _dropped(reg, "queue_full") == 2000 - accepted
    process.stop(timeout=60.0)
    assert len(_logged(models)) == accepted  # everything accepted was run and logged
