"""Hot swap: follow the registry's champion and shadow aliases while serving.

A background thread polls :meth:`Registry.revision` (one row) every ``poll_interval_s``.
When it changes, the aliases are resolved; a version that moved is loaded and verified
*before* it replaces anything, then the new :class:`Deployment` (an immutable pair) is
published with one reference assignment under a lock. Requests read the reference without
locking, so a request in flight finishes on the session it started with and none fails.

A version that fails to verify or load is refused: the old one keeps serving and
``pruneguard_model_reloads_total{result="error"}`` counts it. The swapper does not retry
that version until the registry revision changes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel
from pruneguard.registry.errors import NotFound, Unavailable

__all__ = ["KEEP_LOADED", "Deployment", "ModelSwapper", "RegistryView"]

log = logging.getLogger(__name__)

Loader = Callable[[Path, str], LoadedModel]
KEEP_LOADED = 4  # versions kept open per replica (current champion and shadow included)


class RegistryView(Protocol):
    """The part of :class:`registry.Registry` that serving reads."""

    def revision(self) -> int: ...

    def aliases(self, name: str) -> dict[str, str]: ...

    def path(self, tag: str, *, verify: bool = True) -> Path: ...


@dataclass(frozen=True)
class Deployment:
    """What a replica serves right now."""

    champion: LoadedModel | None = None
    shadow: LoadedModel | None = None
    revision: int | None = None


class ModelSwapper:
    def __init__(
        self,
        registry: RegistryView,
        *,
        model: str,
        loader: Loader,
        metrics: ServingMetrics,
        poll_interval_s: float,
    ) -> None:
        self.registry = registry
        self.model = model
        self.loader = loader
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self._current = Deployment()
        self._recent: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Deployment:
        return self._current  # one reference read: never torn, never waits on a swap

    def refresh(self) -> bool:
        """Poll once; swap if an alias moved. True when the deployment changed."""
        with self._lock:
            try:
                revision = self.registry.revision()
                if revision == self._current.revision:
                    return False
                aliases = self.registry.aliases(self.model)
            except NotFound:
                aliases, revision = {}, self.registry.revision()
            except Unavailable as exc:
                log.warning("registry unreachable, keeping the current models: %s", exc)
                return False
            old = self._current
            new = Deployment(
                champion=self._resolve("champion", aliases.get("champion"), old.champion),
                shadow=self._resolve("shadow", aliases.get("shadow"), old.shadow, keep=False),
                revision=revision,
            )
            self._current = new
            return new.champion is not old.champion or new.shadow is not old.shadow

    def _resolve(
        self, variant: str, tag: str | None, current: LoadedModel | None, *, keep: bool = True
    ) -> LoadedModel | None:
        if tag is None:  # alias unset: a champion keeps serving; a shadow stops
            if current is not None and not keep:
                self._publish_info(variant, current, None)
            return current if keep else None
        if current is not None and current.tag == tag:
            return current
        loaded = self._recent.get(tag)
        if loaded is None:
            try:
                loaded = self.loader(self.registry.path(tag, verify=True), tag)
            except Exception as exc:
                log.error("refusing %s %s, keeping %s: %s", variant, tag, _tag(current), exc)
                self.metrics.model_reloads.labels(self.model, "error").inc()
                return current
        self._remember(loaded)
        self.metrics.model_reloads.labels(self.model, "success").inc()
        self._publish_info(variant, current, loaded)
        log.info("%s %s -> %s", variant, _tag(current), tag)
        return loaded

    def _remember(self, model: LoadedModel) -> None:
        """Keep the last KEEP_LOADED versions open: a rollback to one of them (verified when
        it was loaded; the registry re-verifies the files before it moves an alias) swaps
        without reloading, and champion and shadow share a session when they are one tag."""
        self._recent[model.tag] = model
        self._recent.move_to_end(model.tag)
        while len(self._recent) > KEEP_LOADED:
            self._recent.popitem(last=False)

    def _publish_info(self, variant: str, old: LoadedModel | None, new: LoadedModel | None) -> None:
        if old is not None:
            self.metrics.model_info.labels(self.model, variant, old.version, old.kind).set(0)
        if new is not None:
            self.metrics.model_info.labels(self.model, variant, new.version, new.kind).set(1)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="pruneguard-swap", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        # Fixed rate, not "sleep after work": a move is noticed within one poll interval.
        next_at = time.monotonic()
        while True:
            next_at += self.poll_interval_s
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            try:
                self.refresh()
            except Exception:  # the poller must outlive any one failure
                log.exception("registry poll failed; keeping the current models")
            next_at = max(next_at, time.monotonic() - self.poll_interval_s)  # no catch-up burst


def _tag(model: LoadedModel | None) -> str:
    return model.tag if model is not None else "(none)"
