"""The batched, non-blocking prediction-log writer."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pruneguard.deploy.logwriter import LogWriter
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.registry.db import connect
from pruneguard.registry.predictions import PredictionLog, read_window


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"r{i}",
            "ts": float(i),
            "model": "digits",
            "variant": "champion",
            "version": "v1",
            "features": [1.0],
            "prediction": 0,
            "probabilities": [1.0],
            "latency_ms": 0.1,
        }
        for i in range(start, start + n)
    ]


class _RecordingSink:
    def __init__(self, inner: PredictionLog) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def write_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.batches.append(len(rows))
        self.inner.write_predictions(rows)

    def prune(self, older_than_ts: float | None = None, max_rows: int | None = None) -> int:
        return self.inner.prune(older_than_ts, max_rows)


def _value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"model": "digits", **labels}) or 0.0


def test_rows_are_written_in_batches(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'log.db'}")
    sink = _RecordingSink(PredictionLog(engine))
    reg = CollectorRegistry()
    writer = LogWriter(
        sink,
        model="digits",
        metrics=ServingMetrics(reg),
        queue_size=1000,
        batch_size=50,
        flush_s=0.2,
    )
    assert writer.put(_rows(120)) == 0  # queued before the thread starts: one burst
    writer.start()
    assert writer.wait_idle(30)
    writer.stop()
    assert sink.batches == [50, 50, 20]
    assert len(read_window(engine, "digits", since_ts=0.0)) == 120
    assert _value(reg, "pruneguard_predlog_written_total") == 120


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    sink = _RecordingSink(PredictionLog(connect(f"sqlite:///{tmp_path / 'log.db'}")))
    writer = LogWriter(
        sink, model="digits", metrics=ServingMetrics(reg), queue_size=10, batch_size=5, flush_s=0.1
    )
    assert writer.put(_rows(25)) == 15  # not started: nothing drains; put never blocks
    assert _value(reg, "pruneguard_predlog_dropped_total", reason="queue_full") == 15
    writer.start()
    assert writer.wait_idle(30)
    writer.stop()
    assert sum(sink.batches) == 10


def test_unavailable_database_drops_batches_counts_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    engine = connect(f"sqlite:///{db}")
    log = PredictionLog(engine)
    reg = CollectorRegistry()
    writer = LogWriter(
        log, model="digits", metrics=ServingMetrics(reg), queue_size=100, batch_size=10, flush_s=0.1
    )
    engine.dispose()
    db.rename(tmp_path / "moved.db")
    db.mkdir()  # the database path is now a directory: every write fails
    writer.start()
    writer.put(_rows(7))
    assert writer.wait_idle(30)
    assert _value(reg, "pruneguard_predlog_dropped_total", reason="error") == 7
    db.rmdir()
    (tmp_path / "moved.db").rename(db)
    writer.put(_rows(3, start=7))
    assert writer.wait_idle(30)
    writer.stop()
    assert _value(reg, "pruneguard_predlog_written_total") == 3
    assert read_window(engine, "digits", since_ts=0.0).request_id.tolist() == ["r7", "r8", "r9"]


def test_retention_prunes_from_the_writer_thread(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'log.db'}")
    clock = {"now": 1000.0}
    pruned = threading.Event()

    class Sink(_RecordingSink):
        def prune(self, older_than_ts: float | None = None, max_rows: int | None = None) -> int:
            removed = super().prune(older_than_ts, max_rows)
            pruned.set()
            return removed

    writer = LogWriter(
        Sink(PredictionLog(engine)),
        model="digits",
        metrics=ServingMetrics(CollectorRegistry()),
        queue_size=100,
        batch_size=100,
        flush_s=0.05,
        retention_s=1005.0,
        retention_rows=3,
        prune_every_s=10.0,
        clock=lambda: clock["now"],
    )
    writer.put(_rows(10))
    writer.start()
    assert writer.wait_idle(30)
    clock["now"] = 1011.0  # prune_every_s elapsed: rows older than ts 6 go, then all but 3
    assert pruned.wait(30)
    writer.stop()
    assert read_window(engine, "digits", since_ts=0.0).request_id.tolist() == ["r7", "r8", "r9"]
