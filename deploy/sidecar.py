"""The sidecar: a process beside each serving worker that writes the prediction log and
runs the shadow, at a lower CPU priority than the champion.

Done in the worker, the shadow's inference and comparison and the prediction-log inserts
share its GIL and CPU with the requests, and the champion's latency and throughput pay for
it. With :class:`Sidecar` the worker only queues each answered request (bounded, never
blocking); a forwarder thread writes the queue every ``linger_s`` to a child process
(``python -m deploy.sidecar``), scheduled below the requests (``shadow_sched``: Linux's
SCHED_IDLE by default, so a waking request preempts it at once and the scheduler places it
as on an idle CPU; else niced by ``shadow_nice``). The child logs the champion's
rows, runs the shadow on the sampled ones (a :class:`deploy.shadow.ShadowRunner`) and logs
those too; its metrics go to the same prometheus multiprocess directory (summed on
``/metrics``).

Nothing blocks a request: a full queue drops and counts (``reason="queue_full"`` on
``pruneguard_predlog_dropped_total`` per row and on ``pruneguard_shadow_dropped_total`` per
mirrored request); a child that died loses what was in flight, counted the same way with
``reason="error"``, and is started again. The child exits when its input closes (the
worker stopped or died), after logging and running what it received.

Wire format, no pickle: per group of requests (same shadow version, same row shape),
``<II`` (header length, body length), a JSON header (per request its ids, time, champion
version, latency and the features to log, or null for the flattened batch; the shadow's tag
and path, or null when not mirrored; each array's dtype and shape), then the raw bytes of
the arrays concatenated over the group (batch, champion classes, champion outputs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from pruneguard import SOURCE_ROOT
from pruneguard.deploy.batches import take_batch
from pruneguard.deploy.config import ENV, ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel, Prediction
from pruneguard.deploy.shadow import ShadowJob, concat, group_jobs, sampled

__all__ = ["Sidecar", "decode_frame", "decode_jobs", "encode_jobs", "main", "read_frames"]

log = logging.getLogger(__name__)

_PREFIX = struct.Struct("<II")
_ARRAYS = ("batch", "classes", "outputs")
_STOP = object()


# --- wire format ----------------------------------------------------------------------------
def encode_jobs(jobs: list[ShadowJob]) -> bytes:
    """One frame for jobs that share a shadow version and row shape (see ``group_jobs``):
    their arrays travel concatenated, so the cost is per frame, not per request."""
    shadow = jobs[0].shadow
    arrays = [
        concat([job.batch for job in jobs]),
        concat([job.champion.classes for job in jobs]),
        concat([job.champion.outputs for job in jobs]),
    ]
    header = {
        "jobs": [
            [
                list(job.request_ids),
                job.ts,
                job.champion_version,
                job.champion.latency_s,
                None if job.features is None else list(job.features),
            ]
            for job in jobs
        ],
        "shadow_tag": shadow.tag if shadow is not None else None,
        "shadow_path": str(shadow.path) if shadow is not None else None,
        "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
    }
    head = json.dumps(header).encode()
    body = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    return _PREFIX.pack(len(head), len(body)) + head + body


def decode_frame(head: bytes, body: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the arrays of one frame (``ValueError`` when they disagree)."""
    header = json.loads(head)
    arrays, offset = {}, 0
    for name, (dtype, shape) in zip(_ARRAYS, header["arrays"], strict=True):
        kind = np.dtype(dtype)
        if kind.hasobject:
            raise ValueError(f"array {name} has dtype {dtype}: only plain numbers travel")
        count = math.prod(shape)
        arrays[name] = np.frombuffer(body, kind, count, offset).reshape(shape)
        offset += count * kind.itemsize
    if offset != len(body):
        raise ValueError(f"frame body has {len(body)} bytes, its header lists {offset}")
    rows = sum(len(job[0]) for job in header["jobs"])
    if any(len(a) != rows for a in arrays.values()):
        raise ValueError(f"the frame's arrays do not all have the {rows} rows its jobs list")
    return header, arrays


def decode_jobs(
    head: bytes, body: bytes, shadow: Callable[[str, str], LoadedModel]
) -> list[ShadowJob]:
    """The jobs of one frame; ``shadow(tag, path)`` gives the model mirrored ones run on."""
    header, arrays = decode_frame(head, body)
    tag = header["shadow_tag"]
    model = None if tag is None else shadow(str(tag), str(header["shadow_path"]))
    jobs, start = [], 0
    for request_ids, ts, champion_version, latency_s, features in header["jobs"]:
        rows = slice(start, start + len(request_ids))
        start = rows.stop
        champion = Prediction(arrays["classes"][rows], arrays["outputs"][rows], float(latency_s))
        jobs.append(
            ShadowJob(
                tuple(request_ids), float(ts), arrays["batch"][rows], champion,
                str(champion_version), model, None if features is None else tuple(features),
            )
        )  # fmt: skip
    return jobs


def read_frames(stream: IO[bytes]) -> Any:
    """Yield ``(head, body)`` per frame until the stream ends."""
    while True:
        prefix = _read_exact(stream, _PREFIX.size)
        if prefix is None:
            return
        head_len, body_len = _PREFIX.unpack(prefix)
        head = _read_exact(stream, head_len)
        body = _read_exact(stream, body_len) if body_len else b""
        if head is None or body is None:
            raise EOFError("the sidecar input ended inside a frame")
        yield head, body


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    if not data:
        return None
    if len(data) < n:
        raise EOFError(f"the sidecar input ended after {len(data)} of {n} bytes")
    return data


# --- the serving side -----------------------------------------------------------------------
class Sidecar:
    """A bounded queue in the worker; logging and the shadow run in a child process."""

    def __init__(
        self,
        config: ServeConfig,
        *,
        metrics: ServingMetrics,
        rng: random.Random | None = None,
        queue_size: int | None = None,
        restart_after_s: float = 1.0,
        max_jobs_per_write: int = 256,
        linger_s: float = 0.1,
    ) -> None:
        self.config = config
        self.sample_rate = config.shadow_sample
        self.restart_after_s = restart_after_s
        self.max_jobs_per_write = max_jobs_per_write
        self.linger_s = linger_s
        self.metrics = metrics
        # One queued request per answered request: as many as the log may hold.
        size = config.log_queue if queue_size is None else queue_size
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._rng = rng or random.Random()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._spawned_at = -float("inf")
        self.spawns = 0  # child processes started (a restart adds one)

    @property
    def child_pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def should_sample(self) -> bool:
        return sampled(self.sample_rate, self._rng)

    def submit(self, job: ShadowJob) -> bool:
        """Queue an answered request (mirrored when ``job.shadow`` is set) without
        blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._lost([job], "queue_full")
            return False
        return True

    def _lost(self, jobs: list[ShadowJob], reason: str) -> None:
        model = self.config.model
        self.metrics.predlog_dropped.labels(model, reason).inc(sum(len(j.batch) for j in jobs))
        mirrored = sum(job.shadow is not None for job in jobs)
        if mirrored:
            self.metrics.shadow_dropped.labels(model, reason).inc(mirrored)

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def start(self) -> None:
        """Start the child (now, so that it is ready when traffic comes) and the forwarder."""
        if self._thread is None:
            self._running_child()
            self._thread = threading.Thread(
                target=self._forward, name="pruneguard-sidecar-forward", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Hand the queued jobs to the child, let it finish them, and stop it."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("sidecar: queue still full after %.1fs; stopping it", timeout)
            self._kill()
        self._thread.join(timeout)
        self._thread = None
        self._close(timeout)

    def _forward(self) -> None:
        while True:
            items = take_batch(
                self._queue, limit=self.max_jobs_per_write, linger_s=self.linger_s, stop=_STOP
            )
            jobs = [item for item in items if isinstance(item, ShadowJob)]
            try:
                if jobs:
                    self._send(jobs)
            finally:
                for _ in items:
                    self._queue.task_done()
            if len(jobs) < len(items):
                return

    def _send(self, jobs: list[ShadowJob]) -> None:
        child = self._running_child()
        if child is None or child.stdin is None:
            self._lost(jobs, "error")
            return
        try:
            child.stdin.write(b"".join(encode_jobs(group) for group in group_jobs(jobs)))
            child.stdin.flush()
        except (OSError, ValueError) as exc:  # BrokenPipe, or stdin closed by _kill
            log.warning("sidecar: %d requests lost (%s)", len(jobs), exc)
            self._lost(jobs, "error")

    def _running_child(self) -> subprocess.Popen[bytes] | None:
        """The live child, or a new one (at most one start per ``restart_after_s``)."""
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if child is not None:
            log.warning("sidecar %d exited with %s", child.pid, child.returncode)
            self._child = None
            _close_input(child)
        if time.monotonic() - self._spawned_at < self.restart_after_s:
            return None
        self._spawned_at = time.monotonic()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "pruneguard.deploy.sidecar"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=self._child_env(),
                cwd=SOURCE_ROOT,
            )
        except OSError as exc:
            log.error("sidecar: cannot start (%s)", exc)
            return None
        self.spawns += 1
        log.info("sidecar %d started (%s)", self._child.pid, _priority(self.config))
        return self._child

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.config.to_env()}
        env.pop(ENV["admin_token"], None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        return env

    def _close(self, timeout: float) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        _close_input(child)  # end of input: the child finishes its jobs and exits
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("sidecar %d did not finish in %.1fs; killed", child.pid, timeout)
            child.kill()
            child.wait()

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()


def _close_input(child: subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        with contextlib.suppress(OSError):  # a dead child's pipe may refuse the flush
            child.stdin.close()


# --- the child ------------------------------------------------------------------------------
class _Sessions:
    """The shadow versions this child has opened, the most recent ``keep`` of them."""

    def __init__(self, threads: int, keep: int = 2) -> None:
        self.threads = threads
        self.keep = keep
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def get(self, tag: str, path: str) -> LoadedModel:
        model = self._models.get(tag)
        if model is None:
            model = LoadedModel.load(Path(path), tag=tag, threads=self.threads)
            self._models[tag] = model
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        self._models.move_to_end(tag)
        return model


def lower_priority(config: ServeConfig) -> None:
    """Put this process below the serving worker, as ``config.shadow_sched`` says."""
    os.nice(config.shadow_nice)
    if config.shadow_sched == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _priority(config: ServeConfig) -> str:
    return "SCHED_IDLE" if config.shadow_sched == "idle" else f"nice +{config.shadow_nice}"


def main() -> None:
    """Log and mirror the requests read from stdin until it closes (``python -m deploy.sidecar``)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pruneguard-sidecar %(levelname)s %(message)s"
    )
    # The worker decides when this ends (by closing stdin); a terminal's Ctrl-C or a
    # group-wide SIGTERM must not lose the requests already received.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = ServeConfig.from_env()
    lower_priority(config)  # before the heavy imports below (threads inherit it)
    from pruneguard.deploy.handoff import InWorker
    from pruneguard.deploy.metrics import default_metrics
    from pruneguard.registry import open_registry
    from pruneguard.registry.predictions import PredictionLog

    metrics = default_metrics()
    registry = open_registry(config.db_url or None, home=config.home)
    # A frame is already a batch: the shadow runs what has arrived without waiting.
    here = InWorker(
        config,
        sink=PredictionLog(registry.engine),
        metrics=metrics,
        wait_for_shadow=True,
        shadow_linger_s=0.0,
    )
    sessions = _Sessions(config.ort_threads)
    here.start()
    try:
        for head, body in read_frames(sys.stdin.buffer):
            try:
                jobs = decode_jobs(head, body, sessions.get)
            except Exception:
                log.exception("sidecar frame refused")
                metrics.predlog_dropped.labels(config.model, "error").inc()
                continue
            for job in jobs:
                here.submit(job)
    finally:
        here.stop(timeout=30.0)
        registry.close()


if __name__ == "__main__":
    main()
