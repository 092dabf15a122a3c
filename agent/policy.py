"""The rollback policy: a pure function from (state, check results, time) to (state, decision).

Nothing here reads a clock, a database or the network, so every rule can be tested with tables
and with hypothesis. :mod:`agent.loop` feeds it real checks and carries out its decisions.

Phases (exported as ``pruneguard_agent_analysis_status``, the number in :data:`PHASE_CODES`)::

    idle ──pass──► healthy ──fail──► failing ──fail × threshold──► rolling_back ──done──► cooldown
      ▲              ▲  │               │  ▲                           │ failed            │
      │              └──┴────pass───────┘  └───────────────────────────┘                   │
      └──────────────────────────────── cooldown over ─────────────────────────────────────┘

Choices (DESIGN §3.7):

- A tick's verdict comes from the *gating* checks in ``PolicyConfig.gate_order``: the first one
  that is conclusive decides (labelled accuracy outranks label-free agreement). Other checks
  (drift) are reported but never roll back: a rollback cannot fix the inputs.
- ``inconclusive`` (too few samples, database down) neither counts as a failure nor resets a
  failing streak: "consecutive" means consecutive *conclusive* ticks. Flagger counts "no data"
  as a failure, which rolls back on an outage; resetting instead would let a flaky log hide a
  bad model forever.
- ``threshold`` consecutive failing ticks decide a rollback; after it, a cooldown in which
  nothing is counted (the new champion needs a fresh window), and a flap guard: at most
  ``flap_limit`` automatic rollbacks within ``flap_window_s``, after which the agent holds and
  a person decides. :func:`decide` counts this process's rollbacks; :func:`guard_history`
  applies the same limit to the registry's history, which survives a restart.
- No ping-pong: :func:`guard_target` holds a rollback whose target is a version the agent
  itself rolled back away from within ``flap_window_s`` (it was judged bad; putting it back
  would undo that judgement). The agent holds and a person picks a version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pruneguard.registry.errors import ConfigError

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "OUTCOMES",
    "PASS",
    "PHASE_CODES",
    "CheckResult",
    "Decision",
    "Phase",
    "PolicyConfig",
    "PolicyState",
    "after_rollback",
    "decide",
    "guard_history",
    "guard_target",
    "observe_champion",
    "request_rollback",
    "verdict",
]

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE)


class Phase(StrEnum):
    IDLE = "idle"
    HEALTHY = "healthy"
    FAILING = "failing"
    ROLLING_BACK = "rolling_back"
    COOLDOWN = "cooldown"


PHASE_CODES: dict[Phase, int] = {
    Phase.IDLE: 0,
    Phase.HEALTHY: 1,
    Phase.FAILING: 2,
    Phase.ROLLING_BACK: 3,
    Phase.COOLDOWN: 4,
}


@dataclass(frozen=True)
class CheckResult:
    """One check on one window: its outcome, the evidence, and how many samples it saw."""

    name: str
    outcome: str
    samples: int
    statistic: float | None = None
    p_value: float | None = None
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"check outcome is {self.outcome!r}; expected one of {OUTCOMES}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "detail": dict(self.detail)}


@dataclass(frozen=True)
class PolicyConfig:
    threshold: int = 3
    cooldown_s: float = 600.0
    # cosine: embeddings; logprob_gap, then token_agreement: decoders (the gap is the finer
    # measure of the two, taken on the same requests)
    gate_order: tuple[str, ...] = (
        "accuracy_gap", "agreement", "cosine", "logprob_gap", "token_agreement",
    )  # fmt: skip
    flap_limit: int = 2
    flap_window_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError(
                f"threshold is {self.threshold}; it must be >= 1 failing ticks (try 3)"
            )
        if self.cooldown_s < 0 or self.flap_window_s < 0:
            raise ConfigError(
                f"cooldown_s={self.cooldown_s} and flap_window_s={self.flap_window_s} "
                "must be >= 0 seconds"
            )
        if self.flap_limit < 1:
            raise ConfigError(f"flap_limit is {self.flap_limit}; it must be >= 1 rollback")
        if not self.gate_order:
            raise ConfigError("gate_order is empty; name at least one check, e.g. accuracy_gap")


@dataclass(frozen=True)
class PolicyState:
    phase: Phase = Phase.IDLE
    streak: int = 0
    cooldown_until: float = 0.0
    rollback_times: tuple[float, ...] = ()
    champion: str | None = None
    last_verdict: str = INCONCLUSIVE


@dataclass(frozen=True)
class Decision:
    """``action``: ``none``, ``rollback`` (carry it out) or ``hold`` (would roll back, but
    ``guard`` stops it: ``in_progress``, ``flap_limit`` or ``flap_target``). ``target``: the
    version a rollback goes (or would go) to, once the loop has looked it up."""

    action: str
    reason: str
    verdict: str = INCONCLUSIVE
    trigger: str = "checks"
    failing: tuple[str, ...] = ()
    target: str | None = None
    guard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(checks: Sequence[CheckResult], gate_order: Sequence[str]) -> tuple[str, str | None]:
    """The tick's outcome and the check that decided it (None when all were inconclusive)."""
    by_name = {check.name: check for check in checks}
    for name in gate_order:
        check = by_name.get(name)
        if check is not None and check.outcome != INCONCLUSIVE:
            return check.outcome, name
    return INCONCLUSIVE, None


def _next_streak(streak: int, outcome: str) -> int:
    if outcome == FAIL:
        return streak + 1
    if outcome == PASS:
        return 0
    return streak  # inconclusive: neither a failure nor evidence of health


def _steady_phase(streak: int, outcome: str, previous: Phase) -> Phase:
    if streak > 0:
        return Phase.FAILING
    if outcome == PASS:
        return Phase.HEALTHY
    return Phase.HEALTHY if previous == Phase.HEALTHY else Phase.IDLE


def _recent_rollbacks(state: PolicyState, now: float, config: PolicyConfig) -> tuple[float, ...]:
    return tuple(t for t in state.rollback_times if now - t < config.flap_window_s)


def decide(
    state: PolicyState, checks: Sequence[CheckResult], now: float, config: PolicyConfig
) -> tuple[PolicyState, Decision]:
    """One tick of the policy."""
    outcome, decider = verdict(checks, config.gate_order)
    failing = tuple(check.name for check in checks if check.outcome == FAIL)
    if state.phase == Phase.ROLLING_BACK:
        return state, Decision(
            "hold", "a rollback is in progress", outcome, failing=failing, guard="in_progress"
        )
    if now < state.cooldown_until:
        cooled = dataclasses.replace(state, phase=Phase.COOLDOWN, streak=0, last_verdict=outcome)
        reason = f"cooldown for {state.cooldown_until - now:.0f} s more; nothing is counted"
        return cooled, Decision("none", reason, outcome, failing=failing)
    streak = _next_streak(state.streak, outcome)
    previous = Phase.IDLE if state.phase == Phase.COOLDOWN else state.phase
    new = dataclasses.replace(
        state,
        phase=_steady_phase(streak, outcome, previous),
        streak=streak,
        last_verdict=outcome,
        rollback_times=_recent_rollbacks(state, now, config),
    )
    if outcome != FAIL or streak < config.threshold:  # only fresh evidence acts
        reason = (
            f"{outcome} by {decider or 'no conclusive check'}; streak {streak}/{config.threshold}"
        )
        return new, Decision("none", reason, outcome, failing=failing)
    return _roll_back_or_hold(
        new, config, f"{streak} consecutive failing ticks ({decider})", failing
    )


def _roll_back_or_hold(
    state: PolicyState,
    config: PolicyConfig,
    why: str,
    failing: tuple[str, ...],
    trigger: str = "checks",
) -> tuple[PolicyState, Decision]:
    if len(state.rollback_times) >= config.flap_limit:
        reason = (
            f"{why}, but {len(state.rollback_times)} rollbacks in the last "
            f"{config.flap_window_s:.0f} s reached flap_limit={config.flap_limit}: holding; "
            "roll back by hand with `pruneguard models rollback`"
        )
        return dataclasses.replace(state, phase=Phase.FAILING), Decision(
            "hold", reason, state.last_verdict, trigger, failing, guard="flap_limit"
        )
    rolling = dataclasses.replace(state, phase=Phase.ROLLING_BACK)
    return rolling, Decision("rollback", why, state.last_verdict, trigger, failing)


def request_rollback(
    state: PolicyState, now: float, config: PolicyConfig, reason: str
) -> tuple[PolicyState, Decision]:
    """An outside request (an Alertmanager alert) asks for a rollback: the same cooldown,
    flap guard and in-progress rules apply as to the agent's own checks."""
    if state.phase == Phase.ROLLING_BACK:
        return state, Decision(
            "hold", "a rollback is in progress", trigger="alert", guard="in_progress"
        )
    if now < state.cooldown_until:
        left = state.cooldown_until - now
        return state, Decision("none", f"cooldown for {left:.0f} s more", trigger="alert")
    recent = dataclasses.replace(state, rollback_times=_recent_rollbacks(state, now, config))
    return _roll_back_or_hold(recent, config, f"alert: {reason}", (), trigger="alert")


def guard_target(
    state: PolicyState,
    decision: Decision,
    target: str | None,
    left_at: Mapping[str, float],
    now: float,
    config: PolicyConfig,
) -> tuple[PolicyState, Decision]:
    """Check a ``rollback`` decision's ``target`` against ``left_at`` (version → when the agent
    last rolled back away from it): within ``flap_window_s`` it becomes a ``hold``."""
    if decision.action != "rollback":
        return state, decision
    when = left_at.get(target) if target is not None else None
    if when is None or now - when >= config.flap_window_s:
        return state, dataclasses.replace(decision, target=target)
    reason = (
        f"{decision.reason}, but the rollback target {target} is a version the agent rolled "
        f"back away from {max(now - when, 0.0):.0f} s ago (flap_window_s="
        f"{config.flap_window_s:.0f}): holding; choose a version by hand with "
        "`pruneguard models rollback NAME --to TAG`"
    )
    held = dataclasses.replace(
        decision, action="hold", reason=reason, target=target, guard="flap_target"
    )
    return dataclasses.replace(state, phase=Phase.FAILING), held


def guard_history(
    state: PolicyState,
    decision: Decision,
    rolled_back_at: Sequence[float],
    now: float,
    config: PolicyConfig,
) -> tuple[PolicyState, Decision]:
    """The flap limit counted from the registry's history (automatic rollbacks by any agent,
    ``rolled_back_at``) rather than this process's memory, so a restart does not reset it."""
    if decision.action != "rollback":
        return state, decision
    recent = [t for t in rolled_back_at if now - t < config.flap_window_s]
    if len(recent) < config.flap_limit:
        return state, decision
    reason = (
        f"{decision.reason}, but the history shows {len(recent)} automatic rollbacks in the "
        f"last {config.flap_window_s:.0f} s, reaching flap_limit={config.flap_limit}: holding; "
        "roll back by hand with `pruneguard models rollback`"
    )
    held = dataclasses.replace(decision, action="hold", reason=reason, guard="flap_limit")
    return dataclasses.replace(state, phase=Phase.FAILING), held


def after_rollback(
    state: PolicyState, now: float, result: str, config: PolicyConfig
) -> PolicyState:
    """The state once the loop carried out a rollback: ``done``, ``conflict`` (someone else
    moved the champion first) or ``failed`` (registry unreachable; retried on fresh evidence)."""
    if result == "done":
        return dataclasses.replace(
            state,
            phase=Phase.COOLDOWN,
            streak=0,
            cooldown_until=now + config.cooldown_s,
            rollback_times=(*state.rollback_times, now),
        )
    if result == "conflict":
        return dataclasses.replace(
            state, phase=Phase.COOLDOWN, streak=0, cooldown_until=now + config.cooldown_s
        )
    if result == "failed":
        return dataclasses.replace(state, phase=Phase.FAILING)
    raise ConfigError(f"rollback result is {result!r}; expected done, conflict or failed")


def observe_champion(state: PolicyState, champion: str | None) -> PolicyState:
    """A different champion than last tick (promoted, rolled back by hand): its streak starts
    again; the cooldown, if any, still runs."""
    if champion == state.champion:
        return state
    phase = state.phase if state.phase == Phase.COOLDOWN else Phase.IDLE
    return dataclasses.replace(state, champion=champion, streak=0, phase=phase)
