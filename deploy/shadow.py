"""The shadow: the same rows answered by a second model, off the response path.

:meth:`ShadowRunner.submit` never blocks: it puts a job on a bounded queue, and when the
queue is full the job is dropped and counted (``pruneguard_shadow_dropped_total``). One
background thread per worker process runs the shadow model, compares its answer with the
champion's (:func:`compare`, a pure function) and hands both to ``on_result`` (the
prediction log). Jobs that arrive within ``linger_s`` of each other run as one batch, so
under load the shadow costs one session call per batch rather than one per request.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pruneguard.deploy.batches import take_batch
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel, Prediction
from pruneguard.registry.tasks import CAUSAL_LM, EMBEDDING, Classification, Task

__all__ = [
    "Comparison",
    "ShadowJob",
    "ShadowRunner",
    "compare",
    "concat",
    "group_jobs",
    "sampled",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """Champion vs shadow on the same rows, compared as their task says (:mod:`registry.tasks`)."""

    agree: np.ndarray  # [batch] bool: same class / embeddings within the agreement cosine
    distance: np.ndarray  # [batch] in [0, 1]: total variation, or (1 − cosine) / 2
    similarity: np.ndarray  # [batch]: 1 − distance, or the cosine
    champion_latency_s: float
    shadow_latency_s: float

    @property
    def agreement(self) -> float:
        return float(self.agree.mean()) if self.agree.size else float("nan")

    def part(self, rows: slice, champion_latency_s: float) -> Comparison:
        return Comparison(
            self.agree[rows],
            self.distance[rows],
            self.similarity[rows],
            champion_latency_s,
            self.shadow_latency_s,
        )


def compare(champion: Prediction, shadow: Prediction, task: Task | None = None) -> Comparison:
    """Per row, as ``task`` compares (the shadow model's; classification by default)."""
    paired = (task or Classification()).compare(champion.decoded, shadow.decoded)
    return Comparison(
        agree=paired.agree,
        distance=paired.distance,
        similarity=paired.similarity,
        champion_latency_s=champion.latency_s,
        shadow_latency_s=shadow.latency_s,
    )


@dataclass(frozen=True)
class ShadowJob:
    """What the shadow needs to replay one request: the rows and the champion's answer."""

    request_ids: tuple[str, ...]
    ts: float
    batch: np.ndarray
    champion: Prediction
    champion_version: str
    shadow: LoadedModel | None  # None: logged by the sidecar, not mirrored
    # what the prediction log keeps per row instead of the flattened batch (a text's summary)
    features: tuple[dict[str, Any], ...] | None = None


ResultHook = Callable[[ShadowJob, Prediction, Comparison], None]
_STOP = object()


def sampled(rate: float, rng: random.Random) -> bool:
    """Whether this request is mirrored, at ``rate`` (0..1)."""
    return rate >= 1.0 or rng.random() < rate


class ShadowRunner:
    """A bounded queue and one worker thread running shadow jobs."""

    def __init__(
        self,
        *,
        model: str,
        metrics: ServingMetrics,
        queue_size: int,
        sample_rate: float,
        on_result: ResultHook | None = None,
        rng: random.Random | None = None,
        max_jobs_per_run: int = 64,
        linger_s: float = 0.1,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.sample_rate = sample_rate
        self.on_result = on_result
        self.max_jobs_per_run = max_jobs_per_run
        self.linger_s = linger_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._rng = rng or random.Random()
        self._thread: threading.Thread | None = None
        # Labelled children resolved once: this runs for every mirrored request.
        self._latency = metrics.inference_duration.labels(model, "shadow")
        self._agree = metrics.shadow_comparisons.labels(model, "agree")
        self._disagree = metrics.shadow_comparisons.labels(model, "disagree")
        self._distance = metrics.shadow_distance.labels(model)
        self._cosine = metrics.shadow_cosine.labels(model)
        self._token_agreement = metrics.shadow_token_agreement.labels(model)
        self._logprob_gap = metrics.shadow_logprob_gap.labels(model)
        self._full = metrics.shadow_dropped.labels(model, "queue_full")
        self._failed = metrics.shadow_dropped.labels(model, "error")

    def should_sample(self) -> bool:
        return sampled(self.sample_rate, self._rng)

    def submit(self, job: ShadowJob, *, wait: bool = False) -> bool:
        """Queue ``job``; without ``wait`` never block: False (and counted) when the queue
        is full. (A shadow process waits: its input pipe then holds the back-pressure.)"""
        try:
            self._queue.put(job, block=wait)
        except queue.Full:
            self._full.inc()
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="pruneguard-shadow", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)  # blocks at most until the worker takes one job
        self._thread.join(timeout)
        self._thread = None

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _collect(self) -> list[object]:
        """The next job, plus what arrives within ``linger_s`` (up to max_jobs_per_run):
        the shadow is off the response path, so it may wait to run many jobs as one batch."""
        return take_batch(
            self._queue, limit=self.max_jobs_per_run, linger_s=self.linger_s, stop=_STOP
        )

    def _loop(self) -> None:
        while True:
            items = self._collect()
            jobs = [item for item in items if isinstance(item, ShadowJob)]
            try:
                for group in group_jobs(jobs):
                    self.run_many(group)
            finally:
                for _ in items:
                    self._queue.task_done()
            if len(jobs) < len(items):  # _STOP was among them
                return

    def run(self, job: ShadowJob) -> Comparison | None:
        """Run one job now; errors are counted, not raised."""
        results = self.run_many([job])
        return results[0] if results else None

    def run_many(self, jobs: list[ShadowJob]) -> list[Comparison]:
        """Run jobs that share a shadow model and row shape as ONE batch (amortizing the
        session call and the comparison), then report per job. Errors are counted."""
        shadow = jobs[0].shadow
        if shadow is None:
            return []  # not mirrored
        rows = sum(len(job.batch) for job in jobs)
        try:
            batch = concat([job.batch for job in jobs])
            champion = Prediction(
                classes=concat([job.champion.classes for job in jobs]),
                outputs=concat([job.champion.outputs for job in jobs]),
                latency_s=0.0,
            )
            answer = shadow.predict(batch)
            result = compare(champion, answer, shadow.task)
        except Exception:
            log.exception("shadow %s failed on %d rows", shadow.tag, rows)
            self._failed.inc(len(jobs))
            return []
        self._record(shadow, rows, answer, result)
        return self._report(jobs, answer, result)

    def _report(
        self, jobs: list[ShadowJob], answer: Prediction, result: Comparison
    ) -> list[Comparison]:
        comparisons, start = [], 0
        for job in jobs:
            end = start + len(job.batch)
            part = slice(start, end)
            mine = Prediction(answer.classes[part], answer.outputs[part], answer.latency_s)
            compared = result.part(part, job.champion.latency_s)
            if self.on_result is not None:
                self.on_result(job, mine, compared)
            comparisons.append(compared)
            start = end
        return comparisons

    def _record(
        self, shadow: LoadedModel, rows: int, answer: Prediction, result: Comparison
    ) -> None:
        self._latency.observe(answer.latency_s)
        self.metrics.predictions.labels(self.model, "shadow", shadow.version).inc(rows)
        agree = int(result.agree.sum())
        if agree:
            self._agree.inc(agree)
        if rows - agree:
            self._disagree.inc(rows - agree)
        for distance in result.distance.tolist():
            self._distance.observe(distance)
        if shadow.task.name == EMBEDDING:
            for cosine in result.similarity.tolist():
                self._cosine.observe(cosine)
        if shadow.task.name == CAUSAL_LM:  # the row is [agreement, gap, tokens]
            for agreement, gap, _ in answer.outputs.tolist():
                self._token_agreement.observe(agreement)
                self._logprob_gap.observe(gap)


def concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def group_jobs(jobs: list[ShadowJob]) -> list[list[ShadowJob]]:
    """Consecutive jobs with the same shadow session and row shape (a swap or a dynamic
    dimension starts a new group)."""
    groups: list[list[ShadowJob]] = []
    for job in jobs:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and last.shadow is job.shadow
            and last.batch.shape[1:] == job.batch.shape[1:]
        ):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups
