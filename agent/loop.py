"""The agent: every ``interval`` it analyses each model's last window, asks the policy, and
carries out what it decides through the registry.

One agent acts on a model at a time: each tick renews a lease in the registry database
(``Registry.try_lock``); an agent without the lease analyses but does not act. A database
outage makes every check inconclusive, which the policy never counts as a failure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import analysis as an
from agent.checks import CheckConfig
from agent.metrics import AgentMetrics
from agent.policy import (
    Decision,
    PolicyConfig,
    PolicyState,
    after_rollback,
    decide,
    observe_champion,
    request_rollback,
)
from registry.errors import ArtifactError, ConfigError, Conflict, NotFound, Unavailable

if TYPE_CHECKING:
    from registry import Registry

__all__ = ["Agent", "AgentConfig", "TickResult", "default_actor"]

log = logging.getLogger("pruneguard.agent")


def default_actor() -> str:
    return f"agent:{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class AgentConfig:
    interval_s: float = 30.0
    window_s: float = 600.0
    max_rows: int = 20_000
    lease_ttl_s: float = 0.0  # 0: three intervals (at least 30 s)
    report_every_s: float = 300.0  # 0: every tick; math.inf: only on demand (and on rollback)
    report_on_rollback: bool = True
    report_keep: int = 50
    checks: CheckConfig = field(default_factory=CheckConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.window_s <= 0:
            raise ConfigError(
                f"interval={self.interval_s} s and window={self.window_s} s must be > 0 "
                "(e.g. --interval 30 --window 600)"
            )
        if self.max_rows < 1:
            raise ConfigError(f"max_rows is {self.max_rows}; it must be >= 1")

    @property
    def lease_s(self) -> float:
        return self.lease_ttl_s or max(3 * self.interval_s, 30.0)


@dataclass(frozen=True)
class TickResult:
    model: str
    ts: float
    analysis: an.Analysis
    decision: Decision
    state: PolicyState
    rollback: dict[str, Any] | None = None
    report: str | None = None
    lease: bool | None = True  # None: the database was unavailable

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ts": self.ts,
            "lease": self.lease,
            "phase": self.state.phase.value,
            "streak": self.state.streak,
            "decision": self.decision.to_dict(),
            "rollback": self.rollback,
            "report": self.report,
            **{k: v for k, v in self.analysis.to_dict().items() if k != "model"},
        }


class Agent:
    """Analyses windows, keeps one :class:`PolicyState` per model, rolls back."""

    def __init__(
        self,
        registry: Registry,
        *,
        config: AgentConfig | None = None,
        metrics: AgentMetrics | None = None,
        home: Path | None = None,
        actor: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.config = config or AgentConfig()
        self.metrics = metrics or AgentMetrics()
        self.home = Path(home) if home is not None else registry.settings.home
        self.actor = actor or default_actor()
        self.clock = clock
        self.states: dict[str, PolicyState] = {}
        self._lock = threading.Lock()  # ticks and alert requests act one at a time
        self._references: dict[str, an.Reference] = {}
        self._last_report: dict[str, float] = {}

    # --- one tick -------------------------------------------------------------------------
    def tick(self, model: str, *, report: bool | None = None) -> TickResult:
        """Analyse ``model``'s last window, decide, act. ``report``: force (True) or skip
        (False) the Evidently report; None writes one when ``report_every_s`` has passed."""
        with self._lock:
            now = self.clock()
            self.metrics.declare(model)
            lease = self._take_lease(model)
            if lease is None:  # the database is down: nothing can be read, nothing counted
                result, window = an.unavailable(model, "registry database unavailable"), None
            else:
                result, window = self._analyse(model, now)
            if lease is False:
                held = Decision("none", "another agent holds this model's lease; not acting")
                return TickResult(model, now, result, held, self._state(model), lease=False)
            state = self._state(model)
            if result.champion is not None:  # unknown during an outage: keep the streak
                state = observe_champion(state, result.champion)
            state, decision = decide(state, result.checks, now, self.config.policy)
            rollback = None
            if decision.action == "rollback":
                state, rollback = self._roll_back(model, state, decision, result, now)
            self.states[model] = state
            self._export(model, result, state, now)
            path = self._maybe_report(model, result, window, decision, now, report, rollback)
            return TickResult(model, now, result, decision, state, rollback, path, lease)

    def _state(self, model: str) -> PolicyState:
        return self.states.get(model, PolicyState())

    def _take_lease(self, model: str) -> bool | None:
        """True: this agent acts on ``model``; False: another does; None: database down."""
        try:
            return self.registry.try_lock(f"agent:{model}", self.actor, self.config.lease_s)
        except Unavailable as exc:
            log.warning("lease for %s: %s", model, exc)
            return None

    def _analyse(self, model: str, now: float) -> tuple[an.Analysis, an.Window | None]:
        from registry.predictions import read_window

        try:
            champion = self.registry.resolve(model, "champion")
            shadow = self.registry.aliases(model).get("shadow")
            manifest = self.registry.get(champion).manifest
            reference = self._reference(champion, manifest)
            frame = read_window(
                self.registry.engine,
                model,
                since_ts=now - self.config.window_s,
                limit=2 * self.config.max_rows,
            )
        except (Unavailable, NotFound, ArtifactError) as exc:
            log.warning("window of %s: %s", model, exc)
            return an.unavailable(model, str(exc)), None
        return an.analyse(
            frame,
            model=model,
            champion=champion,
            shadow=shadow,
            manifest=manifest,
            reference=reference,
            config=self.config.checks,
        )

    def _reference(self, champion: str, manifest: dict[str, Any]) -> an.Reference:
        if champion not in self._references:
            from agent.features import input_shape

            path = self.registry.path(champion) / "reference.parquet"
            self._references = {champion: an.load_reference(path, input_shape(manifest))}
        return self._references[champion]

    # --- acting ---------------------------------------------------------------------------
    def _roll_back(
        self,
        model: str,
        state: PolicyState,
        decision: Decision,
        result: an.Analysis,
        now: float,
    ) -> tuple[PolicyState, dict[str, Any]]:
        evidence = {
            "decision": decision.to_dict(),
            "checks": [c.to_dict() for c in result.checks],
            "samples": dict(result.samples),
            "window_s": self.config.window_s,
            "threshold": self.config.policy.threshold,
            "champion": result.champion,
            "shadow": result.shadow,
        }
        outcome: dict[str, Any] = {"trigger": decision.trigger, "from": result.champion}
        try:
            event = self.registry.rollback(
                model,
                actor=self.actor,
                reason=f"pruneguard agent: {decision.reason}",
                evidence=evidence,
                expected=result.champion,
            )
        except Conflict as exc:
            # Someone (a person, another agent) moved the champion first: our evidence is about
            # a version that no longer serves. Don't retry; analyse the new one after a cooldown.
            log.warning("rollback of %s not done: %s", model, exc)
            outcome.update(result="conflict", error=str(exc))
        except (Unavailable, ArtifactError, NotFound) as exc:
            log.error("rollback of %s failed: %s", model, exc)
            outcome.update(result="failed", error=str(exc))
        else:
            log.warning("rolled back %s: %s -> %s", model, event.from_version, event.to_version)
            self.metrics.rollbacks.labels(model=model, trigger=decision.trigger).inc()
            outcome.update(result="done", to=event.to_version, event_id=event.id)
        state = after_rollback(state, now, outcome["result"], self.config.policy)
        return state, outcome

    def request_rollback(self, model: str, reason: str) -> dict[str, Any]:
        """An alert asks for a rollback: same lease, cooldown and flap guard as the checks."""
        with self._lock:
            now = self.clock()
            self.metrics.declare(model)
            if not self._take_lease(model):
                reason = "another agent holds the lease, or the database is unavailable"
                return {"model": model, "action": "none", "reason": reason}
            try:
                champion = self.registry.resolve(model, "champion")
            except (NotFound, Unavailable) as exc:
                return {"model": model, "action": "none", "reason": str(exc)}
            state = observe_champion(self._state(model), champion)
            state, decision = request_rollback(state, now, self.config.policy, reason)
            rollback = None
            if decision.action == "rollback":
                alert = an.Analysis(model, champion, None, (), error=None)
                state, rollback = self._roll_back(model, state, decision, alert, now)
            self.states[model] = state
            self.metrics.set_phase(model, state.phase)
            return {"model": model, **decision.to_dict(), "rollback": rollback}

    # --- exporting ------------------------------------------------------------------------
    def _export(self, model: str, result: an.Analysis, state: PolicyState, now: float) -> None:
        m, nan = self.metrics, an.finite_or_nan
        drift = result.drift
        m.drift_share.labels(model=model).set(nan(drift.share if drift else None))
        m.drift_detected.labels(model=model).set(nan(float(drift.detected) if drift else None))
        for variant in ("champion", "shadow"):
            m.accuracy.labels(model=model, variant=variant).set(nan(result.accuracy.get(variant)))
        m.accuracy_gap.labels(model=model).set(nan(result.accuracy_gap))
        m.agreement_ratio.labels(model=model).set(nan(result.agreement))
        for kind in ("rows", "pairs", "labelled"):
            m.window_samples.labels(model=model, kind=kind).set(result.samples.get(kind, 0))
        m.failed_checks.labels(model=model).set(state.streak)
        m.set_phase(model, state.phase)
        m.last_run.labels(model=model).set(now)

    def _maybe_report(
        self,
        model: str,
        result: an.Analysis,
        window: an.Window | None,
        decision: Decision,
        now: float,
        force: bool | None,
        rollback: dict[str, Any] | None,
    ) -> str | None:
        every = self.config.report_every_s
        due = math.isfinite(every) and now - self._last_report.get(model, -math.inf) >= every
        on_rollback = rollback is not None and self.config.report_on_rollback
        if window is None or force is False or not (force or due or on_rollback):
            return None
        from agent.reports import write_report

        self._last_report[model] = now
        reference = self._references.get(result.champion or "")
        try:
            path = write_report(
                self.home,
                result,
                window,
                reference,
                decision,
                now=now,
                rollback=rollback,
                keep=self.config.report_keep,
            )
        except Exception:  # a report is a by-product: it must never stop a tick
            log.exception("report for %s not written", model)
            return None
        return str(path)

    # --- the loop -------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Every registered model that has a champion."""
        names = sorted({v.name for v in self.registry.list()})
        return [n for n in names if "champion" in self.registry.aliases(n)]

    def run(self, models: Sequence[str] | None, stop: threading.Event) -> None:
        """Tick every model each ``interval_s`` until ``stop`` is set; then give the leases back."""
        acted: set[str] = set()
        try:
            while not stop.is_set():
                started = time.monotonic()
                for model in self._targets(models):
                    if stop.is_set():
                        break
                    self._safe_tick(model, acted)
                stop.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))
        finally:
            self._release(acted)

    def _targets(self, models: Sequence[str] | None) -> list[str]:
        if models:
            return list(models)
        try:
            return self.models()
        except Unavailable as exc:
            log.warning("cannot list models: %s", exc)
            return sorted(self.states)

    def _safe_tick(self, model: str, acted: set[str]) -> None:
        try:
            result = self.tick(model)
        except Exception:  # one model's failure must not stop the loop for the others
            log.exception("tick of %s failed", model)
            return
        if result.lease:
            acted.add(model)  # (a tick during an outage may have held it: released too)
        log.info("%s: %s (%s)", model, result.state.phase.value, result.decision.reason)

    def _release(self, models: set[str]) -> None:
        for model in models:
            try:
                self.registry.release_lock(f"agent:{model}", self.actor)
            except Unavailable as exc:
                log.warning("lease of %s not released (it expires by itself): %s", model, exc)


def replace_config(config: AgentConfig, **changes: Any) -> AgentConfig:
    """``AgentConfig`` with top-level and nested (``threshold=`` → policy) changes."""
    policy = {k: changes.pop(k) for k in list(changes) if k in PolicyConfig.__dataclass_fields__}
    checks = {k: changes.pop(k) for k in list(changes) if k in CheckConfig.__dataclass_fields__}
    return dataclasses.replace(
        config,
        policy=dataclasses.replace(config.policy, **policy),
        checks=dataclasses.replace(config.checks, **checks),
        **changes,
    )
