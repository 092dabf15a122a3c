"""promtool on pruneguard's rules and metrics: the rule unit tests pass, they fail when a rule
is weakened (so they test something), and the serving and agent expositions lint clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_files import RULES, RULES_TEST, load_yaml
from prometheus_client import CollectorRegistry, generate_latest


def _promtool(promtool_bin: str, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = subprocess.run(
        [promtool_bin, *args], input=stdin, capture_output=True, check=False, timeout=60
    )
    return result.returncode, (result.stdout + result.stderr).decode()


def test_rule_unit_tests_pass(promtool_bin: str) -> None:
    code, output = _promtool(promtool_bin, "test", "rules", str(RULES_TEST))
    assert code == 0, output
    assert "SUCCESS" in output


def _threshold(factor: float) -> Callable[[dict[str, Any]], None]:
    """Moves the alert's first comparison threshold (x > t, x < t) away from the test data."""

    def mutate(rule: dict[str, Any]) -> None:
        match = re.search(r"([<>])\s*([0-9.]+)", rule["expr"])
        assert match, rule["expr"]
        old = float(match.group(2))
        new = old * factor if old else 1.0
        rule["expr"] = rule["expr"][: match.start(2)] + repr(new) + rule["expr"][match.end(2) :]

    return mutate


def _field(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(rule: dict[str, Any]) -> None:
        rule[key] = value

    return mutate


MUTATIONS = {
    "drift threshold": ("PruneguardDriftDetected", _threshold(2)),
    "drift for": ("PruneguardDriftDetected", _field("for", "1m")),
    "drift keep_firing_for": ("PruneguardDriftDetected", _field("keep_firing_for", "0s")),
    "accuracy gap threshold": ("PruneguardAccuracyGap", _threshold(10)),
    "agreement threshold": ("PruneguardAgreementDrop", _threshold(0.5)),
    "shadow drop threshold": ("PruneguardShadowDropRate", _threshold(10)),
    "reload errors threshold": ("PruneguardModelReloadErrors", _threshold(2)),
    "agent staleness threshold": ("PruneguardAgentNotRunning", _threshold(10)),
    "rollback threshold": ("PruneguardRollback", _threshold(2)),
    "rollback keep_firing_for": ("PruneguardRollback", _field("keep_firing_for", "5m")),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_weakened_rule_fails_its_unit_test(
    promtool_bin: str, tmp_path: Path, mutation: str
) -> None:
    alert, mutate = MUTATIONS[mutation]
    rules = load_yaml(RULES)
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    before = dict(rule)
    mutate(rule)
    assert rule != before
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    code, output = _promtool(promtool_bin, "test", "rules", str(tmp_path / "rules_test.yml"))
    assert code != 0, f"{mutation}: the unit tests still pass\n{output}"
    assert f"alertname: {alert}" in output


def _serving_exposition() -> bytes:
    from pruneguard.deploy.metrics import ServingMetrics

    registry = CollectorRegistry()
    m = ServingMetrics(registry)
    m.init_labels("digits")
    m.predictions.labels("digits", "champion", "v2").inc(3)
    m.inference_duration.labels("digits", "champion").observe(0.004)
    m.inference_duration.labels("digits", "shadow").observe(0.009)
    m.shadow_comparisons.labels("digits", "agree").inc()
    m.shadow_distance.labels("digits").observe(0.05)
    m.model_info.labels("digits", "champion", "v2", "pruned").set(1)
    m.invalid_requests.labels("digits", "shape").inc()
    return generate_latest(registry)


def _agent_exposition() -> bytes:
    from pruneguard.agent.metrics import AgentMetrics

    m = AgentMetrics(CollectorRegistry())
    m.declare("digits")
    for gauge, value in ((m.drift_share, 0.4), (m.drift_detected, 1), (m.accuracy_gap, 0.03)):
        gauge.labels(model="digits").set(value)
    m.accuracy.labels(model="digits", variant="champion").set(0.91)
    m.window_samples.labels(model="digits", kind="rows").set(500)
    m.last_run.labels(model="digits").set_to_current_time()
    m.rollbacks.labels(model="digits", trigger="checks").inc()
    return m.exposition()


@pytest.mark.parametrize(
    "exposition", [_serving_exposition, _agent_exposition], ids=["serving", "agent"]
)
def test_metrics_lint_clean(promtool_bin: str, exposition: Callable[[], bytes]) -> None:
    text = exposition()
    assert b"pruneguard_" in text
    code, output = _promtool(promtool_bin, "check", "metrics", stdin=text)
    assert (code, output.strip()) == (0, "")


def test_metrics_lint_catches_a_bad_name(promtool_bin: str) -> None:
    bad = b"# HELP pruneguard_rollbacks Rollbacks.\n# TYPE pruneguard_rollbacks counter\npruneguard_rollbacks 1\n"
    code, output = _promtool(promtool_bin, "check", "metrics", stdin=bad)
    assert code != 0 and '"_total" suffix' in output
