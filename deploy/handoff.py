"""Where a worker hands each answered request: it is logged and, when sampled, mirrored.

:class:`Handoff` is the one-call contract (``submit`` a :class:`deploy.shadow.ShadowJob`
whose ``shadow`` is set when the request is mirrored). Two implementations:

- :class:`InWorker` does it in the calling process: a :class:`deploy.logwriter.LogWriter`
  and a :class:`deploy.shadow.ShadowRunner`, each with a background thread. The sidecar
  process runs one; ``PRUNEGUARD_SHADOW_MODE=thread`` runs one in the worker itself.
- :class:`deploy.sidecar.Sidecar` (the default) forwards the requests to a sidecar process.
"""

from __future__ import annotations

from typing import Protocol

from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.logwriter import LogSink, LogWriter, logged_features, prediction_rows
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import Prediction
from pruneguard.deploy.shadow import Comparison, ShadowJob, ShadowRunner

__all__ = ["Handoff", "InWorker"]


class Handoff(Protocol):
    def should_sample(self) -> bool: ...

    def submit(self, job: ShadowJob) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def pending(self) -> int: ...


class InWorker:
    """Logs the champion's rows and runs the shadow on mirrored requests, in this process.

    ``wait_for_shadow``: block when the shadow queue is full instead of dropping (the
    sidecar process does, so that back-pressure reaches the worker's queue, which counts).
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        sink: LogSink,
        metrics: ServingMetrics,
        wait_for_shadow: bool = False,
        shadow_linger_s: float = 0.1,
    ) -> None:
        self.model = config.model
        self.wait_for_shadow = wait_for_shadow
        self.logwriter = LogWriter(
            sink,
            model=config.model,
            metrics=metrics,
            queue_size=config.log_queue,
            batch_size=config.log_batch,
            flush_s=config.log_flush_s,
            retention_s=config.retention_s,
            retention_rows=config.retention_rows,
        )
        self.shadow = ShadowRunner(
            model=config.model,
            metrics=metrics,
            queue_size=config.shadow_queue,
            sample_rate=config.shadow_sample,
            on_result=self._log_shadow,
            linger_s=shadow_linger_s,
        )

    def should_sample(self) -> bool:
        return self.shadow.should_sample()

    def submit(self, job: ShadowJob) -> bool:
        self.logwriter.put(
            prediction_rows(
                self.model, job.request_ids, job.ts, "champion", job.champion_version,
                logged_features(job.batch, job.features), job.champion,
            )
        )  # fmt: skip
        if job.shadow is None:
            return True
        return self.shadow.submit(job, wait=self.wait_for_shadow)

    def start(self) -> None:
        self.logwriter.start()
        self.shadow.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Run the queued shadow jobs, then write every queued row."""
        self.shadow.stop(timeout)
        self.logwriter.stop(max(timeout, 10.0))

    def pending(self) -> int:
        return self.shadow.pending()

    def _log_shadow(self, job: ShadowJob, answer: Prediction, _: Comparison) -> None:
        assert job.shadow is not None  # the runner only runs mirrored jobs
        self.logwriter.put(
            prediction_rows(
                self.model, job.request_ids, job.ts, "shadow", job.shadow.version,
                None, answer,
            )
        )  # fmt: skip
