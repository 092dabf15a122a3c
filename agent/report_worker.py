"""Writes Evidently reports off the tick's thread.

A report takes seconds to tens of seconds (Evidently, a few MB of HTML); a tick must not
wait for one, and neither must shutdown. One daemon thread writes reports one at a time,
and each model has at most one report outstanding (running or queued): a request while one
is outstanding is *skipped* and counted, never queued behind it — the next due tick asks
again with a fresher window.

``close(timeout)`` drops queued requests and waits at most ``timeout`` seconds for the
running one; a report cut short by the process exiting leaves only a hidden temporary
directory, which :mod:`agent.reports` removes later.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["RESULTS", "ReportWorker"]

log = logging.getLogger("pruneguard.agent.reports")

RESULTS = ("written", "failed", "skipped")
Job = Callable[[], Path]


class ReportWorker:
    """One background thread; at most one outstanding report per model.

    ``on_result(model, result)`` is called with ``written``, ``failed`` or ``skipped``
    (from the worker thread for the first two).
    """

    def __init__(self, on_result: Callable[[str, str], None] | None = None) -> None:
        self._on_result = on_result or (lambda model, result: None)
        self._queue: queue.Queue[tuple[str, Job] | None] = queue.Queue()
        self._outstanding: set[str] = set()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.skipped: dict[str, int] = {}

    def submit(self, model: str, job: Job) -> bool:
        """Queue ``job`` (it writes ``model``'s report and returns its path); False — and
        counted as skipped — when one is outstanding for ``model`` or the worker is closed."""
        with self._idle:
            if self._closed or model in self._outstanding:
                self.skipped[model] = self.skipped.get(model, 0) + 1
                accepted = False
            else:
                self._outstanding.add(model)
                self._start()
                self._queue.put((model, job))
                accepted = True
        if not accepted:
            self._on_result(model, "skipped")
        return accepted

    def busy(self, model: str) -> bool:
        with self._idle:
            return model in self._outstanding

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no report is outstanding (True) or ``timeout`` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._outstanding, timeout)

    def close(self, timeout: float) -> bool:
        """Refuse new requests, drop queued ones, wait up to ``timeout`` s for the running
        one. True when the worker thread has finished."""
        with self._idle:
            self._closed = True
        self._drop_queued()
        self._queue.put(None)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="pruneguard-reports", daemon=True
            )
            self._thread.start()

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                log.info("report for %s dropped at shutdown", item[0])
                self._finish(item[0], "skipped")

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            model, job = item
            try:
                path = job()
            except Exception:  # a report is a by-product: log it, keep the worker alive
                log.exception("report for %s not written", model)
                self._finish(model, "failed")
            else:
                log.info("report for %s written: %s", model, path)
                self._finish(model, "written")

    def _finish(self, model: str, result: str) -> None:
        if result == "skipped":
            with self._idle:
                self.skipped[model] = self.skipped.get(model, 0) + 1
        try:
            self._on_result(model, result)
        finally:
            with self._idle:
                self._outstanding.discard(model)
                self._idle.notify_all()
