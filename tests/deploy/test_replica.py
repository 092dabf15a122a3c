"""A Replica in-process (no HTTP): predict, shadow, log, feedback, not-ready, admin off."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_support import MODEL, ROW, Models, wait_for

from pruneguard.deploy.admin import AdminAPI, AdminDenied, AdminDisabled
from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.runtime import NotReady, Replica
from pruneguard.deploy.validation import ValidationError
from pruneguard.registry.predictions import PredictionLog, read_window


def _replica(models: Models, reg: CollectorRegistry, **overrides: object) -> Replica:
    settings: dict[str, object] = {
        "model": MODEL,
        "home": models.home,
        "log_flush_s": 0.05,
        **overrides,
    }
    config = ServeConfig(**settings)  # type: ignore[arg-type]
    return Replica(
        config,
        registry=models.registry,
        sink=PredictionLog(models.registry.engine),
        metrics=ServingMetrics(reg),
    )


@pytest.mark.parametrize("shadow_mode", ["process", "thread"])
def test_predict_logs_champion_and_shadow_and_counts(models: Models, shadow_mode: str) -> None:
    reg = CollectorRegistry()
    replica = _replica(models, reg, shadow_mode=shadow_mode)
    replica.start()
    try:
        body = replica.predict(np.ones((3, 1, 8, 8)).tolist())
        assert body["model_version"] == models.champion_version and len(body["request_ids"]) == 3
        frame = wait_for(
            lambda: (
                (f,)
                if len(f := read_window(models.registry.engine, MODEL, since_ts=0)) == 6
                else None
            )
        )[0]
        assert set(frame.request_id) == set(body["request_ids"])
        assert replica.feedback(body["request_ids"][0], 4)["recorded"]
    finally:
        replica.stop()
    labels = read_window(models.registry.engine, MODEL, since_ts=0).label
    assert labels.notna().sum() == 2  # the label joins both variants of that request
    count = reg.get_sample_value(
        "pruneguard_predictions_total",
        {"model": MODEL, "variant": "champion", "version": models.champion_version},
    )
    assert count == 3
    assert reg.get_sample_value("pruneguard_feedback_total", {"model": MODEL}) == 1


@pytest.mark.parametrize("shadow_mode", ["process", "thread"])
def test_sample_rate_zero_logs_the_champion_and_never_runs_the_shadow(
    models: Models, shadow_mode: str
) -> None:
    reg = CollectorRegistry()
    replica = _replica(models, reg, shadow_sample=0.0, shadow_mode=shadow_mode)
    replica.start()
    try:
        for _ in range(5):
            replica.predict([ROW])
    finally:
        replica.stop()  # writes what is queued before returning
    frame = read_window(models.registry.engine, MODEL, since_ts=0)
    assert frame.variant.tolist() == ["champion"] * 5
    assert (
        reg.get_sample_value(
            "pruneguard_shadow_comparisons_total", {"model": MODEL, "outcome": "agree"}
        )
        == 0
    )


def test_invalid_requests_are_counted_by_problem(models: Models) -> None:
    reg = CollectorRegistry()
    replica = _replica(models, reg, max_batch=2)
    replica.swapper.refresh()
    with pytest.raises(ValidationError, match="exceeds the limit of 2"):
        replica.predict([ROW] * 3)
    with pytest.raises(ValidationError):
        replica.feedback("abc", 99)
    assert (
        reg.get_sample_value(
            "pruneguard_invalid_requests_total", {"model": MODEL, "problem": "batch_size"}
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "pruneguard_invalid_requests_total", {"model": MODEL, "problem": "label"}
        )
        == 1
    )


def test_without_a_champion_the_replica_is_not_ready(models: Models) -> None:
    replica = _replica(models, CollectorRegistry(), model="unknown-model")
    replica.swapper.refresh()
    assert not replica.ready
    with pytest.raises(NotReady, match="no champion"):
        replica.predict([ROW])


def test_admin_is_off_without_a_token_and_checks_it_when_on(models: Models) -> None:
    off = AdminAPI(_replica(models, CollectorRegistry()))
    with pytest.raises(AdminDisabled, match="--admin-token-env"):
        off.authorize("Bearer anything")
    on = AdminAPI(_replica(models, CollectorRegistry(), admin_token="tok"))
    on.authorize("Bearer tok")
    on.authorize("bearer tok")
    for header in (None, "", "Bearer", "Bearer tok2", "Basic tok", "tok"):
        with pytest.raises(AdminDenied):
            on.authorize(header)


def test_status_never_shows_secrets(models: Models) -> None:
    replica = _replica(
        models,
        CollectorRegistry(),
        admin_token="zz-admin-zz",
        db_url="postgresql+psycopg://prune:zz-pass-zz@db:5432/prune",
    )
    text = str(replica.status())
    assert "zz-admin-zz" not in text and "zz-pass-zz" not in text
    assert "***" in text
