"""The agent: every ``interval`` it analyses each model's last window, asks the policy, and
carries out what it decides through the registry.

One agent acts on a model at a time: each tick renews a lease in the registry database
(``Registry.try_lock``); an agent without the lease analyses but does not act. A database
outage makes every check inconclusive, which the policy never counts as a failure.

Evidently reports are written by a :class:`~agent.report_worker.ReportWorker` in the
background, so a due report never holds up a tick or shutdown; ``tick(report=True)`` and
:meth:`Agent.report` write one synchronously.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
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

from pruneguard.agent import analysis as an
from pruneguard.agent.checks import CheckConfig
from pruneguard.agent.metrics import GUARDS, AgentMetrics
from pruneguard.agent.policy import (
    Decision,
    PolicyConfig,
    PolicyState,
    after_rollback,
    decide,
    guard_history,
    guard_target,
    observe_champion,
    request_rollback,
    verdict,
)
from pruneguard.agent.report_worker import ReportWorker
from pruneguard.registry.errors import ArtifactError, ConfigError, Conflict, NotFound, Unavailable

if TYPE_CHECKING:
    from pruneguard.registry import Registry

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
    shutdown_grace_s: float = 10.0  # how long close() waits for a running report
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
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"shutdown_grace_s is {self.shutdown_grace_s}; it must be >= 0")

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
    report: str | None = None  # the report's directory (being written when "queued")
    lease: bool | None = True  # None: the database was unavailable
    report_status: str | None = None  # written | queued | skipped | failed; None: not due

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
            "report_status": self.report_status,
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
        reports: ReportWorker | None = None,
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
        self.reports = reports or ReportWorker(on_result=self._count_report)

    # --- one tick -------------------------------------------------------------------------
    def tick(self, model: str, *, report: bool | None = None) -> TickResult:
        """Analyse ``model``'s last window, decide, act. ``report``: write the Evidently report
        now, synchronously (True), or not (False); None queues one for the background worker
        when ``report_every_s`` has passed or after a rollback."""
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
                state, decision, rollback = self._carry_out(model, state, decision, result, now)
            self._count_hold(model, decision)
            self.states[model] = state
            self._export(model, result, state, now)
            path, status = self._maybe_report(
                model, result, window, decision, now, report, rollback
            )
            return TickResult(model, now, result, decision, state, rollback, path, lease, status)

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
        try:
            return self._read_and_analyse(model, now)
        except (Unavailable, NotFound, ArtifactError) as exc:
            log.warning("window of %s: %s", model, exc)
            return an.unavailable(model, str(exc)), None

    def _read_and_analyse(self, model: str, now: float) -> tuple[an.Analysis, an.Window]:
        from pruneguard.registry.predictions import read_window

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
            from pruneguard.agent.features import input_shape

            path = self.registry.path(champion) / "reference.parquet"
            self._references = {champion: an.load_reference(path, input_shape(manifest))}
        return self._references[champion]

    # --- acting ---------------------------------------------------------------------------
    def _carry_out(
        self,
        model: str,
        state: PolicyState,
        decision: Decision,
        result: an.Analysis,
        now: float,
    ) -> tuple[PolicyState, Decision, dict[str, Any] | None]:
        """Look the rollback target up, hold a ping-pong one (no event), else roll back."""
        try:
            target, left_at, rolled_back_at = self._rollback_plan(model, result.champion)
        except (Unavailable, NotFound) as exc:
            log.error("rollback of %s failed: %s", model, exc)
            outcome = {"trigger": decision.trigger, "from": result.champion}
            outcome.update(result="failed", error=str(exc))
            return after_rollback(state, now, "failed", self.config.policy), decision, outcome
        policy = self.config.policy
        state, decision = guard_history(state, decision, rolled_back_at, now, policy)
        state, decision = guard_target(state, decision, target, left_at, now, policy)
        if decision.action == "hold":
            log.warning("rollback of %s held: %s", model, decision.reason)
            return state, decision, None
        state, outcome = self._roll_back(model, state, decision, result, now)
        return state, decision, outcome

    def _rollback_plan(
        self, model: str, champion: str | None
    ) -> tuple[str | None, dict[str, float], list[float]]:
        """From the event history: the version a rollback from ``champion`` goes to (the
        registry's own rule), when an agent last rolled back away from each version, and
        when agents rolled back at all."""
        from pruneguard.registry.history import previous_champion

        events = self.registry.history(model)
        target = previous_champion(events, champion) if champion is not None else None
        automatic = [
            e
            for e in events
            if e.action == "rollback"
            and e.alias == "champion"
            and e.actor.startswith("agent:")  # any agent: the lease moves between them
        ]
        left_at = {e.from_version: _unix(e.ts) for e in automatic if e.from_version is not None}
        return target, left_at, [_unix(e.ts) for e in automatic]

    def _count_hold(self, model: str, decision: Decision) -> None:
        if decision.action == "hold" and decision.guard in GUARDS:
            self.metrics.held.labels(model=model, guard=decision.guard).inc()

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
                to=decision.target,  # the target guard_target checked; None: the registry's
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
                state, decision, rollback = self._carry_out(model, state, decision, alert, now)
            self._count_hold(model, decision)
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
        m.mean_cosine.labels(model=model).set(nan(result.mean_cosine))
        m.token_logprob_gap.labels(model=model).set(nan(result.logprob_gap))
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
    ) -> tuple[str | None, str | None]:
        """(report directory, status) — or (None, None) when no report is due."""
        every = self.config.report_every_s
        due = math.isfinite(every) and now - self._last_report.get(model, -math.inf) >= every
        on_rollback = rollback is not None and self.config.report_on_rollback
        if window is None or force is False or not (force or due or on_rollback):
            return None, None
        reference = self._references.get(result.champion or "")
        job = functools.partial(
            self._write_report, result, window, reference, decision, now, rollback
        )
        if force:
            self._last_report[model] = now
            try:
                path = job()
            except Exception:  # a report is a by-product: it must never stop a tick
                log.exception("report for %s not written", model)
                self._count_report(model, "failed")
                return None, "failed"
            self._count_report(model, "written")
            return str(path), "written"
        if not self.reports.submit(model, job):
            log.info("report for %s skipped: one is still being written", model)
            return None, "skipped"
        self._last_report[model] = now  # a skipped request is asked again next tick
        from pruneguard.agent.reports import report_dir

        return str(report_dir(self.home, model, now)), "queued"

    def _write_report(
        self,
        result: an.Analysis,
        window: an.Window,
        reference: an.Reference | None,
        decision: Decision,
        now: float,
        rollback: dict[str, Any] | None,
    ) -> Path:
        from pruneguard.agent.reports import write_report

        keep = self.config.report_keep
        return write_report(
            self.home, result, window, reference, decision, now=now, rollback=rollback, keep=keep
        )

    def _count_report(self, model: str, result: str) -> None:
        self.metrics.reports.labels(model=model, result=result).inc()

    def report(self, model: str) -> Path:
        """Analyse ``model``'s last window and write its report now (synchronously). Takes no
        decision and changes no state; raises the registry's error (``NotFound``,
        ``Unavailable``, ``ArtifactError``) when the window cannot be read."""
        with self._lock:
            now = self.clock()
            self.metrics.declare(model)
            result, window = self._read_and_analyse(model, now)
            reference = self._references.get(result.champion or "")
        outcome, _ = verdict(result.checks, self.config.policy.gate_order)
        decision = Decision("none", "report on demand: no decision taken", outcome)
        try:
            path = self._write_report(result, window, reference, decision, now, None)
        except Exception:
            self._count_report(model, "failed")
            raise
        self._count_report(model, "written")
        return path

    def close(self, timeout: float | None = None) -> bool:
        """Stop the report worker: queued reports are dropped, a running one gets ``timeout``
        seconds (``shutdown_grace_s`` by default). True when nothing is left running."""
        return self.reports.close(self.config.shutdown_grace_s if timeout is None else timeout)

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


def _unix(iso: str) -> float:
    when = dt.datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


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
