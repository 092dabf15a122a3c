"""Readers for the files under grafana/ and the metric names the code defines.

Shared by the static, promtool and Prometheus integration tests in this folder.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALERTMANAGER",
    "BENTOML_METRICS",
    "COMPOSE",
    "DASHBOARD",
    "DATASOURCES",
    "DESIGN_METRICS",
    "GRAFANA",
    "GRAFANA_ALERTS",
    "OPERATIONS_DOC",
    "PROMETHEUS_CONFIG",
    "ROOT",
    "RULES",
    "RULES_TEST",
    "Query",
    "alert_names",
    "dashboard_queries",
    "defined_metrics",
    "grafana_alert_queries",
    "grafana_alert_rules",
    "load_dashboard",
    "load_yaml",
    "metric_tokens",
    "prometheus_rules",
    "rule_queries",
    "substitute",
    "unknown_metrics",
]

ROOT = Path(__file__).resolve().parents[2]  # tests/support/ -> the repository
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "pruneguard-overview.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_ALERTS = GRAFANA / "provisioning" / "alerting" / "pruneguard-alerts.yaml"
RULES = GRAFANA / "prometheus" / "rules.yml"
RULES_TEST = GRAFANA / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = GRAFANA / "prometheus" / "prometheus.yml"
ALERTMANAGER = GRAFANA / "alertmanager" / "alertmanager.yml"
COMPOSE = GRAFANA / "docker-compose.yml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

# BentoML's built-in HTTP metrics (bentoml 1.4), served on the service's /metrics.
BENTOML_METRICS = (
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds",
    "bentoml_service_request_in_progress",
)
# DESIGN §3.6: what the overview dashboard must show.
DESIGN_METRICS = (
    "pruneguard_predictions_total",
    "pruneguard_inference_duration_seconds",
    "pruneguard_shadow_comparisons_total",
    "pruneguard_shadow_dropped_total",
    "pruneguard_model_info",
    "pruneguard_model_reloads_total",
    "pruneguard_feedback_total",
    "pruneguard_drift_share",
    "pruneguard_drift_detected",
    "pruneguard_accuracy",
    "pruneguard_accuracy_gap",
    "pruneguard_agreement_ratio",
    "pruneguard_window_samples",
    "pruneguard_agent_failed_checks",
    "pruneguard_agent_analysis_status",
    "pruneguard_rollbacks_total",
    "pruneguard_agent_last_run_timestamp_seconds",
)
SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PREFIXES = ("pruneguard_", "pruneguard:", "bentoml_")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it was found (for error messages)."""

    where: str
    expr: str


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def defined_metrics() -> set[str]:
    """Every metric family name the code exposes: deploy.metrics + agent.metrics + BentoML."""
    names = set(BENTOML_METRICS)
    for module in ("pruneguard.deploy.metrics", "pruneguard.agent.metrics"):
        names.update(importlib.import_module(module).METRIC_NAMES)
    return names


def metric_tokens(expr: str) -> set[str]:
    """Metric (and recording-rule) names in a PromQL expression: pruneguard_*, pruneguard:*, bentoml_*."""
    bare = _QUOTED.sub('""', expr)
    return {tok for tok in _IDENT.findall(bare) if tok.startswith(_PREFIXES)}


def unknown_metrics(expr: str, defined: set[str], recorded: set[str]) -> set[str]:
    """Names in ``expr`` that neither the code nor a recording rule defines."""
    unknown = set()
    for tok in metric_tokens(expr):
        if ":" in tok:
            if tok not in recorded:
                unknown.add(tok)
            continue
        base = next((tok[: -len(s)] for s in SAMPLE_SUFFIXES if tok.endswith(s)), tok)
        if tok not in defined and base not in defined:
            unknown.add(tok)
    return unknown


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Panel targets, annotation queries and query variables of the dashboard."""
    out = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            out.append(Query(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for ann in dashboard["annotations"]["list"]:
        if "expr" in ann:
            out.append(Query(f"annotation {ann['name']!r}", ann["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(Query(f"variable {var['name']!r}", query))
    return out


def prometheus_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    return [
        Query(f"rules.yml {r.get('alert') or r['record']}", r["expr"]) for r in prometheus_rules()
    ]


def grafana_alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(GRAFANA_ALERTS)["groups"] for rule in group["rules"]]


def grafana_alert_queries() -> list[Query]:
    out = []
    for rule in grafana_alert_rules():
        for node in rule["data"]:
            if node["datasourceUid"] != "__expr__":
                out.append(
                    Query(f"grafana alert {rule['title']} {node['refId']}", node["model"]["expr"])
                )
    return out


def alert_names() -> list[str]:
    return [r["alert"] for r in prometheus_rules() if "alert" in r]


def substitute(expr: str, *, model: str, rate_interval: str, range_: str) -> str:
    """Replace Grafana's template variables the way Grafana would before querying Prometheus."""
    for var, value in (
        ("$__rate_interval", rate_interval),
        ("$__range", range_),
        ("${model}", model),
        ("$model", model),
    ):
        expr = expr.replace(var, value)
    return expr


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())
