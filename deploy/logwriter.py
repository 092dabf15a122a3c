"""Batched, non-blocking writes to the prediction log.

Serving threads call :meth:`LogWriter.put`, which never blocks: rows go on a bounded queue
and, when it is full, are dropped and counted (``pruneguard_predlog_dropped_total
{reason="queue_full"}``). One background thread per worker process writes them in batches
(at most ``batch_size`` rows, at most ``flush_s`` late). A failed write drops its batch and
counts it (``reason="error"``): serving never waits for the database. Every
``prune_every_s`` the thread also enforces retention through ``PredictionLog.prune``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pruneguard.deploy.batches import take_batch
from pruneguard.deploy.metrics import ServingMetrics

if TYPE_CHECKING:
    import numpy as np

    from pruneguard.deploy.model import Prediction

__all__ = ["LogSink", "LogWriter", "logged_features", "prediction_rows"]

log = logging.getLogger(__name__)
_STOP = object()


class LogSink(Protocol):
    """What the writer needs from :class:`registry.predictions.PredictionLog`."""

    def write_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def prune(self, older_than_ts: float | None = None, max_rows: int | None = None) -> int: ...


class LogWriter:
    def __init__(
        self,
        sink: LogSink,
        *,
        model: str,
        metrics: ServingMetrics,
        queue_size: int,
        batch_size: int,
        flush_s: float,
        retention_s: float | None = None,
        retention_rows: int | None = None,
        prune_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.model = model
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.retention_s = retention_s
        self.retention_rows = retention_rows
        self.prune_every_s = prune_every_s
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last_prune = clock()

    def put(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Queue ``rows`` without blocking; returns how many were dropped (queue full)."""
        dropped = 0
        for row in rows:
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                dropped += 1
        if dropped:
            self.metrics.predlog_dropped.labels(self.model, "queue_full").inc(dropped)
        return dropped

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._loop, name="pruneguard-predlog", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued row was written or dropped (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _loop(self) -> None:
        while True:
            batch, stop = self._collect()
            if batch:
                self._write(batch)
            for _ in range(len(batch) + stop):
                self._queue.task_done()
            self._maybe_prune()
            if stop:
                return

    def _collect(self) -> tuple[list[Mapping[str, Any]], bool]:
        """The next batch (at most ``batch_size`` rows, ``flush_s`` late) and whether stop
        was asked for."""
        items = take_batch(
            self._queue,
            limit=self.batch_size,
            linger_s=self.flush_s,
            stop=_STOP,
            timeout=self.flush_s,
            pause=self._stopping.wait,
        )
        stop = bool(items) and items[-1] is _STOP
        return (items[:-1] if stop else items), stop  # type: ignore[return-value]

    def _write(self, batch: list[Mapping[str, Any]]) -> None:
        try:
            self.sink.write_predictions(batch)
        except Exception as exc:
            log.warning("prediction log: dropped %d rows: %s", len(batch), exc)
            self.metrics.predlog_dropped.labels(self.model, "error").inc(len(batch))
        else:
            self.metrics.predlog_written.labels(self.model).inc(len(batch))

    def _maybe_prune(self) -> None:
        now = self._clock()
        if now - self._last_prune < self.prune_every_s:
            return
        self._last_prune = now
        if self.retention_s is None and self.retention_rows is None:
            return
        older = None if self.retention_s is None else now - self.retention_s
        try:
            removed = self.sink.prune(older_than_ts=older, max_rows=self.retention_rows)
        except Exception as exc:
            log.warning("prediction log: retention prune failed: %s", exc)
            return
        if removed:
            log.info("prediction log: pruned %d rows", removed)


def logged_features(batch: np.ndarray, features: Sequence[Any] | None) -> list[Any]:
    """What the prediction log keeps of each row: ``features`` when the request gave them
    (a text's summary), else the flattened input row."""
    import numpy as np

    if features is not None:
        return list(features)
    return batch.reshape(len(batch), -1).astype(np.float64).tolist()


def prediction_rows(
    model: str,
    request_ids: Sequence[str],
    ts: float,
    variant: str,
    version: str,
    features: Sequence[Any] | None,
    answer: Prediction,
) -> list[Mapping[str, Any]]:
    """One prediction-log row per request id. A shadow row's ``features`` are None (stored
    as ``[]``): the champion row of the same request_id holds them, and ``read_window``
    fills them in. ``probabilities`` holds the decoded outputs: class probabilities, or the
    embedding (DESIGN §3.8)."""
    import numpy as np

    outputs = answer.outputs.astype(np.float64).tolist()
    classes = answer.classes.tolist()
    latency_ms = answer.latency_s * 1000.0
    return [
        {
            "request_id": request_id,
            "ts": ts,
            "model": model,
            "variant": variant,
            "version": version,
            "features": features[i] if features is not None else [],
            "prediction": int(classes[i]),
            "probabilities": outputs[i],
            "latency_ms": latency_ms,
        }
        for i, request_id in enumerate(request_ids)
    ]
