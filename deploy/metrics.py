"""Prometheus metrics of a serving replica (DESIGN §3.6).

BentoML runs its workers in prometheus_client's multiprocess mode and serves every
worker's metrics on the service's ``/metrics``: counters and histograms are summed across
workers; ``pruneguard_model_info`` uses ``livemax`` so it needs no ``pid`` label.
Create :class:`ServingMetrics` inside the worker (after BentoML has set
``PROMETHEUS_MULTIPROC_DIR``), never at import time; :func:`default_metrics` does that once
per process.

Labels are bounded: ``model``, ``variant`` (champion|shadow), ``version``, ``kind`` and
small fixed sets for ``outcome``, ``reason``, ``result`` and ``problem``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "DROP_REASONS",
    "METRIC_NAMES",
    "ServingMetrics",
    "default_metrics",
]

# Every metric family this module defines, as exposed (counters with their _total suffix).
METRIC_NAMES: tuple[str, ...] = (
    "pruneguard_predictions_total",
    "pruneguard_inference_duration_seconds",
    "pruneguard_shadow_comparisons_total",
    "pruneguard_shadow_probability_distance",
    "pruneguard_shadow_cosine",
    "pruneguard_shadow_token_agreement",
    "pruneguard_shadow_logprob_gap",
    "pruneguard_generated_tokens_total",
    "pruneguard_shadow_dropped_total",
    "pruneguard_model_info",
    "pruneguard_model_reloads_total",
    "pruneguard_feedback_total",
    "pruneguard_predlog_written_total",
    "pruneguard_predlog_dropped_total",
    "pruneguard_invalid_requests_total",
)

DROP_REASONS = ("queue_full", "error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DISTANCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
COSINE_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.999, 1.0)
AGREEMENT_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
GAP_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class ServingMetrics:
    """The serving metric families, registered in ``registry`` (default: the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = REGISTRY if registry is None else registry
        self.predictions = Counter(
            "pruneguard_predictions_total",
            "Rows answered, per model variant and version (shadow rows included).",
            ["model", "variant", "version"],
            registry=reg,
        )
        self.inference_duration = Histogram(
            "pruneguard_inference_duration_seconds",
            "ONNX Runtime time per request batch, per variant.",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.shadow_comparisons = Counter(
            "pruneguard_shadow_comparisons_total",
            "Rows compared between champion and shadow, by whether their answers agree (same "
            "class; embeddings: cosine >= 0.9).",
            ["model", "outcome"],
            registry=reg,
        )
        self.shadow_distance = Histogram(
            "pruneguard_shadow_probability_distance",
            "Total-variation distance between champion and shadow probabilities, per row.",
            ["model"],
            buckets=DISTANCE_BUCKETS,
            registry=reg,
        )
        self.shadow_cosine = Histogram(
            "pruneguard_shadow_cosine",
            "Cosine between champion and shadow embeddings of the same text (embedding task).",
            ["model"],
            buckets=COSINE_BUCKETS,
            registry=reg,
        )
        self.shadow_token_agreement = Histogram(
            "pruneguard_shadow_token_agreement",
            "Share of a champion answer's tokens the shadow ranks first (causal-lm task).",
            ["model"],
            buckets=AGREEMENT_BUCKETS,
            registry=reg,
        )
        self.shadow_logprob_gap = Histogram(
            "pruneguard_shadow_logprob_gap",
            "Shadow's mean top-minus-token log-prob gap on a champion answer, nats (causal-lm).",
            ["model"],
            buckets=GAP_BUCKETS,
            registry=reg,
        )
        self.generated_tokens = Counter(
            "pruneguard_generated_tokens_total",
            "Tokens generated on /generate (causal-lm champions).",
            ["model", "variant"],
            registry=reg,
        )
        self.shadow_dropped = Counter(
            "pruneguard_shadow_dropped_total",
            "Shadow jobs not run: queue_full (never blocks serving) or error.",
            ["model", "reason"],
            registry=reg,
        )
        self.model_info = Gauge(
            "pruneguard_model_info",
            "1 for the version each variant serves now, 0 for versions it served before.",
            ["model", "variant", "version", "kind"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.model_reloads = Counter(
            "pruneguard_model_reloads_total",
            "Model loads after an alias moved: success, or error (the old version kept serving).",
            ["model", "result"],
            registry=reg,
        )
        self.feedback = Counter(
            "pruneguard_feedback_total",
            "Labels recorded through /feedback.",
            ["model"],
            registry=reg,
        )
        self.predlog_written = Counter(
            "pruneguard_predlog_written_total",
            "Rows written to the prediction log.",
            ["model"],
            registry=reg,
        )
        self.predlog_dropped = Counter(
            "pruneguard_predlog_dropped_total",
            "Prediction-log rows dropped: queue_full (never blocks serving) or error (DB write failed).",
            ["model", "reason"],
            registry=reg,
        )
        self.invalid_requests = Counter(
            "pruneguard_invalid_requests_total",
            "Requests answered 400, by problem (shape, dtype, non_finite, batch_size, ...).",
            ["model", "problem"],
            registry=reg,
        )

    def init_labels(self, model: str) -> None:
        """Create the zero-valued series a dashboard expects before anything happened."""
        for reason in DROP_REASONS:
            self.shadow_dropped.labels(model, reason)
            self.predlog_dropped.labels(model, reason)
        for outcome in ("agree", "disagree"):
            self.shadow_comparisons.labels(model, outcome)
        for result in ("success", "error"):
            self.model_reloads.labels(model, result)
        self.feedback.labels(model)
        self.predlog_written.labels(model)
        self.generated_tokens.labels(model, "champion")


@functools.cache
def default_metrics() -> ServingMetrics:
    """The process-wide metrics in the global registry (created on first use)."""
    return ServingMetrics()
