"""The agent's Prometheus metrics (DESIGN §3.6), on a registry of their own.

Labels are bounded: ``model`` on every family, plus ``variant`` (champion|shadow), ``kind``
(:data:`SAMPLE_KINDS`), ``trigger`` (:data:`TRIGGERS`), ``result`` (:data:`REPORT_RESULTS`) and
``guard`` (:data:`GUARDS`). ``pruneguard_agent_analysis_status``
is the phase number of :data:`agent.policy.PHASE_CODES` (0 idle, 1 healthy, 2 failing,
3 rolling_back, 4 cooldown). Values that a window cannot tell (accuracy without labels) are NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from pruneguard.agent.policy import Phase

__all__ = [
    "GUARDS",
    "METRIC_NAMES",
    "REPORT_RESULTS",
    "SAMPLE_KINDS",
    "TRIGGERS",
    "VARIANTS",
    "AgentMetrics",
]

VARIANTS = ("champion", "shadow")
SAMPLE_KINDS = ("rows", "pairs", "labelled")
TRIGGERS = ("checks", "alert")
REPORT_RESULTS = ("written", "failed", "skipped")  # agent.report_worker.RESULTS
GUARDS = ("flap_limit", "flap_target")  # agent.policy.Decision.guard values that are counted
METRIC_NAMES: tuple[str, ...] = (
    "pruneguard_drift_share",
    "pruneguard_drift_detected",
    "pruneguard_accuracy",
    "pruneguard_accuracy_gap",
    "pruneguard_agreement_ratio",
    "pruneguard_mean_cosine",
    "pruneguard_token_logprob_gap",
    "pruneguard_window_samples",
    "pruneguard_agent_failed_checks",
    "pruneguard_agent_analysis_status",
    "pruneguard_rollbacks_total",
    "pruneguard_agent_last_run_timestamp_seconds",
    "pruneguard_agent_reports_total",
    "pruneguard_agent_rollbacks_held_total",
)


class AgentMetrics:
    """Every agent metric family, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.drift_share = Gauge(
            "pruneguard_drift_share",
            "Share of tested columns drifted (Holm-corrected)",
            ["model"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "pruneguard_drift_detected",
            "1 when any column drifted in the last window",
            ["model"],
            registry=r,
        )
        self.accuracy = Gauge(
            "pruneguard_accuracy",
            "Accuracy on labelled requests of the last window",
            ["model", "variant"],
            registry=r,
        )
        self.accuracy_gap = Gauge(
            "pruneguard_accuracy_gap",
            "Shadow minus champion accuracy on the same labelled requests",
            ["model"],
            registry=r,
        )
        self.agreement_ratio = Gauge(
            "pruneguard_agreement_ratio",
            "Share of paired requests where champion and shadow agree",
            ["model"],
            registry=r,
        )
        self.mean_cosine = Gauge(
            "pruneguard_mean_cosine",
            "Mean cosine of champion and shadow embeddings over the window's pairs (embedding "
            "models; NaN otherwise)",
            ["model"],
            registry=r,
        )
        self.token_logprob_gap = Gauge(
            "pruneguard_token_logprob_gap",
            "Mean log-prob gap (nats) the dense shadow gives the champion's generated tokens "
            "over the window's requests (causal-lm models; NaN otherwise)",
            ["model"],
            registry=r,
        )
        self.window_samples = Gauge(
            "pruneguard_window_samples",
            "Samples in the last window (rows, pairs, labelled pairs)",
            ["model", "kind"],
            registry=r,
        )
        self.failed_checks = Gauge(
            "pruneguard_agent_failed_checks",
            "Consecutive failing ticks (the policy's streak)",
            ["model"],
            registry=r,
        )
        self.analysis_status = Gauge(
            "pruneguard_agent_analysis_status",
            "Phase: 0 idle, 1 healthy, 2 failing, 3 rolling_back, 4 cooldown",
            ["model"],
            registry=r,
        )
        self.rollbacks = Counter(
            "pruneguard_rollbacks",
            "Rollbacks the agent carried out",
            ["model", "trigger"],
            registry=r,
        )
        self.last_run = Gauge(
            "pruneguard_agent_last_run_timestamp_seconds",
            "Unix time of the last finished tick",
            ["model"],
            registry=r,
        )

        self.reports = Counter(
            "pruneguard_agent_reports",
            "Evidently reports requested: written, failed, or skipped (one already outstanding)",
            ["model", "result"],
            registry=r,
        )
        self.held = Counter(
            "pruneguard_agent_rollbacks_held",
            "Ticks whose rollback a guard held (flap_limit, flap_target: no ping-pong)",
            ["model", "guard"],
            registry=r,
        )

    def declare(self, model: str) -> None:
        """Create the counter children at 0 so ``increase()`` sees the first event."""
        for trigger in TRIGGERS:
            self.rollbacks.labels(model=model, trigger=trigger)
        for result in REPORT_RESULTS:
            self.reports.labels(model=model, result=result)
        for guard in GUARDS:
            self.held.labels(model=model, guard=guard)

    def set_phase(self, model: str, phase: Phase) -> None:
        from pruneguard.agent.policy import PHASE_CODES

        self.analysis_status.labels(model=model).set(PHASE_CODES[phase])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
