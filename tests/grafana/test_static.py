"""Static checks of grafana/: well-formed files, metric names the code defines, matching uids,
annotated alerts with runbooks, and one-host files that agree on paths and ports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from monitoring_files import (
    ALERTMANAGER,
    COMPOSE,
    DASHBOARD,
    DATASOURCES,
    DESIGN_METRICS,
    GRAFANA,
    GRAFANA_ALERTS,
    OPERATIONS_DOC,
    PROMETHEUS_CONFIG,
    RULES,
    RULES_TEST,
    alert_names,
    dashboard_queries,
    defined_metrics,
    grafana_alert_queries,
    grafana_alert_rules,
    load_dashboard,
    load_yaml,
    metric_tokens,
    prometheus_rules,
    rule_queries,
    unknown_metrics,
)

DS_VARIABLE = "${datasource}"
ALERTS = (
    "PruneguardDriftDetected",
    "PruneguardAccuracyGap",
    "PruneguardAgreementDrop",
    "PruneguardShadowDropRate",
    "PruneguardModelReloadErrors",
    "PruneguardAgentNotRunning",
    "PruneguardRollback",
)


def _datasource_uid() -> str:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    return str(source["uid"])


def _recorded() -> set[str]:
    return {r["record"] for r in prometheus_rules() if "record" in r}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# --- well-formed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [DATASOURCES, GRAFANA / "provisioning/dashboards/pruneguard.yaml", GRAFANA_ALERTS],
    ids=lambda p: p.name,
)
def test_provisioning_files_are_grafana_v1(path: Path) -> None:
    data = load_yaml(path)
    assert data["apiVersion"] == 1
    assert {"datasources", "providers", "groups"} & data.keys()


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "pruneguard overview"
    assert dashboard["uid"] == "pruneguard-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["expr"].strip() and target["refId"], panel["title"]


def test_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning/dashboards/pruneguard.yaml")["providers"]
    mounts = load_yaml(COMPOSE)["services"]["grafana"]["volumes"]
    targets = {m.split(":")[1]: m.split(":")[0] for m in mounts if m.startswith("./")}
    assert targets[provider["options"]["path"]] == "./dashboards"
    assert targets["/etc/grafana/provisioning"] == "./provisioning"


# --- metric names --------------------------------------------------------------------------------


def test_every_query_uses_only_metrics_the_code_defines() -> None:
    defined, recorded = defined_metrics(), _recorded()
    queries = dashboard_queries(load_dashboard()) + rule_queries() + grafana_alert_queries()
    assert len(queries) > 30
    problems = {
        q.where: sorted(bad) for q in queries if (bad := unknown_metrics(q.expr, defined, recorded))
    }
    assert not problems, f"metric names no module defines: {problems}"


def test_name_check_catches_unknown_names() -> None:
    defined = {"pruneguard_inference_duration_seconds", "pruneguard_predictions_total"}
    ok = 'histogram_quantile(0.9, sum by (le) (rate(pruneguard_inference_duration_seconds_bucket{model="pruneguard_x"}[5m])))'
    assert unknown_metrics(ok, defined, set()) == set()
    assert unknown_metrics("rate(pruneguard_predictions[5m])", defined, set()) == {
        "pruneguard_predictions"
    }
    assert unknown_metrics("pruneguard:missing:rate5m > 0", defined, set()) == {
        "pruneguard:missing:rate5m"
    }
    assert metric_tokens("sum(bentoml_service_request_total) by (endpoint)") == {
        "bentoml_service_request_total"
    }


def test_dashboard_shows_every_design_metric() -> None:
    used = set().union(*(metric_tokens(q.expr) for q in dashboard_queries(load_dashboard())))
    used |= {t.removesuffix(s) for t in used for s in ("_bucket", "_sum", "_count")}
    assert set(DESIGN_METRICS) - used == set()
    assert {"bentoml_service_request_total", "bentoml_service_request_duration_seconds"} <= used


def test_dashboard_has_the_promised_views() -> None:
    dashboard = load_dashboard()
    exprs = " ".join(q.expr for q in dashboard_queries(dashboard))
    for quantile in ("0.50", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, variant)" in exprs
    names = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource"
    assert names["model"]["type"] == "query"
    assert all(
        'model=~"$model"' in q.expr
        for q in dashboard_queries(dashboard)
        if "pruneguard_" in q.expr and "label_values" not in q.expr
    )
    annotations = {a["name"]: a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a}
    assert "pruneguard_rollbacks_total" in annotations["Rollbacks"]
    assert "pruneguard_model_reloads_total" in annotations["Model reloads"]
    (link,) = dashboard["links"]
    assert link["url"] == "${agent_url}/reports/latest/${model}"
    assert names["agent_url"]["query"].startswith("http://127.0.0.1:")


# --- datasources ---------------------------------------------------------------------------------


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [r for v in node.values() for r in _datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _datasource_refs(v)]
    return []


def test_dashboard_datasources_are_the_provisioned_one() -> None:
    dashboard, uid = load_dashboard(), _datasource_uid()
    refs = [r for r in _datasource_refs(dashboard) if r.get("type") == "prometheus"]
    assert refs
    assert {r["uid"] for r in refs} <= {uid, DS_VARIABLE}
    (var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert var["query"] == "prometheus"
    assert var["current"]["value"] == uid


def test_grafana_alerts_use_the_provisioned_datasource() -> None:
    uid = _datasource_uid()
    for rule in grafana_alert_rules():
        uids = {node["datasourceUid"] for node in rule["data"]}
        assert uids == {uid, "__expr__"}, rule["title"]
        refs = {node["refId"] for node in rule["data"]}
        assert rule["condition"] in refs, rule["title"]


def test_datasource_url_is_prometheus_listen_address() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    listen = _compose_flag("prometheus", "--web.listen-address")
    assert urlsplit(source["url"]).netloc == listen


# --- alerts --------------------------------------------------------------------------------------


def test_the_seven_alerts_exist_in_prometheus_and_grafana() -> None:
    assert sorted(alert_names()) == sorted(ALERTS)
    assert sorted(r["title"] for r in grafana_alert_rules()) == sorted(ALERTS)


def _annotated(name: str, annotations: dict[str, str]) -> None:
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{name} has no {key}"
    assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}", name


def test_every_prometheus_alert_is_annotated_and_damped() -> None:
    for rule in prometheus_rules():
        if "alert" in rule:
            _annotated(rule["alert"], rule["annotations"])
            assert "for" in rule and "keep_firing_for" in rule, rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}


def test_every_grafana_alert_is_annotated() -> None:
    for rule in grafana_alert_rules():
        _annotated(rule["title"], rule["annotations"])
        assert rule["labels"]["severity"] in {"warning", "critical"}


def _threshold(expr: str) -> float:
    match = re.search(r"[<>]\s*([0-9.]+)", expr)
    assert match, expr
    return float(match.group(1))


def _seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_grafana_and_prometheus_thresholds_agree() -> None:
    prom = {r["alert"]: r for r in prometheus_rules() if "alert" in r}
    for rule in grafana_alert_rules():
        (cond,) = [n for n in rule["data"] if n["refId"] == rule["condition"]]
        (evaluator,) = [c["evaluator"] for c in cond["model"]["conditions"]]
        assert evaluator["params"][0] == _threshold(prom[rule["title"]]["expr"]), rule["title"]
        assert _seconds(rule["for"]) == _seconds(prom[rule["title"]]["for"]), rule["title"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    seen: dict[str, set[bool]] = {}
    for test in load_yaml(RULES_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            seen.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert seen == {name: {True, False} for name in ALERTS}


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_operations_doc_has_a_runbook_section_per_alert() -> None:
    text = OPERATIONS_DOC.read_text()
    anchors = {_slug(m) for m in re.findall(r"^#{2,4} (.+)$", text, flags=re.M)}
    for name in ALERTS:
        assert name.lower() in anchors, f"docs/operations.md has no '### {name}' section"
    assert "pruneguard models rollback" in text
    assert "agent.md" in text


def test_rule_job_selectors_match_scrape_jobs() -> None:
    jobs = {c["job_name"] for c in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    used = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert used and used <= jobs


# --- one-host files ------------------------------------------------------------------------------


def _compose_flag(service: str, flag: str) -> str:
    command = load_yaml(COMPOSE)["services"][service]["command"]
    values = [c.split("=", 1)[1] for c in command if c.startswith(flag + "=")]
    if not values:  # "--flag", "value"
        values = [command[command.index(flag) + 1]]
    return str(values[0])


def test_compose_has_the_whole_stack_on_loopback() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {
        "service",
        "agent",
        "postgres",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for name, spec in services.items():
        assert spec["network_mode"] == "host", name
    assert _compose_flag("service", "--host") == "127.0.0.1"
    assert _compose_flag("agent", "--host") == "127.0.0.1"
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    for name in ("prometheus", "alertmanager"):
        assert _compose_flag(name, "--web.listen-address").startswith("127.0.0.1:")


def test_compose_mounts_existing_files() -> None:
    compose = load_yaml(COMPOSE)
    for name, spec in compose["services"].items():
        for mount in spec.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (GRAFANA / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    build = compose["x-pruneguard"]["build"]
    assert (GRAFANA / build["context"] / build["dockerfile"]).is_file()
    for secret in compose["secrets"].values():  # the token itself is written by the user
        assert (GRAFANA / secret["file"]).parent.is_dir()


def test_prometheus_targets_match_compose_ports() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    targets = {
        c["job_name"]: c["static_configs"][0]["targets"][0] for c in config["scrape_configs"]
    }
    assert _port(targets["pruneguard-service"]) == int(_compose_flag("service", "--port"))
    assert _port(targets["pruneguard-agent"]) == int(_compose_flag("agent", "--port"))
    assert targets["prometheus"] == _compose_flag("prometheus", "--web.listen-address")
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == _compose_flag("alertmanager", "--web.listen-address")
    mounted = [m.split(":")[0] for m in load_yaml(COMPOSE)["services"]["prometheus"]["volumes"]]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file()
        assert f"./prometheus/{rule_file}" in mounted


def test_compose_database_url_matches_postgres() -> None:
    compose = load_yaml(COMPOSE)
    env = compose["x-pruneguard"]["environment"]
    pg = compose["services"]["postgres"]["environment"]
    url = urlsplit(env["PRUNEGUARD_DB_URL"])
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert url.port == 5432 and url.hostname == "127.0.0.1"


def _agent_target() -> str:
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [c for c in config["scrape_configs"] if c["job_name"] == "pruneguard-agent"]
    return str(job["static_configs"][0]["targets"][0])


def test_alertmanager_routes_rollback_alerts_to_the_agent_webhook() -> None:
    config = load_yaml(ALERTMANAGER)
    receivers = {r["name"]: r for r in config["receivers"]}
    routes = [config["route"], *config["route"]["routes"]]
    assert {r["receiver"] for r in routes} <= receivers.keys()
    (agent_route,) = [r for r in config["route"]["routes"] if r["receiver"] == "pruneguard-agent"]
    assert agent_route["matchers"] == ['service = "pruneguard"', 'action = "rollback"']
    (hook,) = receivers["pruneguard-agent"]["webhook_configs"]
    url = urlsplit(hook["url"])
    assert (url.netloc, url.path) == (_agent_target(), "/alerts")
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer" and "credentials" not in auth
    secret = load_yaml(COMPOSE)["services"]["alertmanager"]["secrets"][0]
    assert auth["credentials_file"] == f"/run/secrets/{secret}"
    assert all(r["labels"]["service"] == "pruneguard" for r in prometheus_rules() if "alert" in r)


def test_only_champion_worse_than_shadow_alerts_ask_the_agent_for_a_rollback() -> None:
    # The agent's webhook rolls back on every firing alert it gets: a rollback alert (or drift,
    # which hits both models) reaching it would roll back again.
    for rules in (
        {r["alert"]: r["labels"] for r in prometheus_rules() if "alert" in r},
        {r["title"]: r["labels"] for r in grafana_alert_rules()},
    ):
        asking = {name for name, labels in rules.items() if labels.get("action") == "rollback"}
        assert asking == {"PruneguardAccuracyGap", "PruneguardAgreementDrop"}


def _cli_context(argv: list[str]) -> Any:
    """Parse a `pruneguard ...` command line with the real click commands (nothing runs)."""
    import click

    from pruneguard.cli import main

    assert argv[0] == "pruneguard"
    command: click.Command = main
    ctx = click.Context(main, info_name="pruneguard")
    args = argv[1:]
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} in {argv}"
        command, ctx = sub, click.Context(sub, info_name=name, parent=ctx)
    return command.make_context(ctx.info_name, list(args), parent=ctx.parent)


def test_compose_commands_parse_with_the_real_cli() -> None:
    services = load_yaml(COMPOSE)["services"]
    for name in ("service", "agent"):
        argv = [
            a.replace("${PRUNEGUARD_MODEL:-digits-cnn}", "digits-cnn")
            for a in services[name]["command"]
        ]
        ctx = _cli_context(argv)
        assert ctx.params["host"] == "127.0.0.1", name
    agent_run = _cli_context(services["agent"]["command"]).command
    (token,) = [p for p in agent_run.params if p.name == "alert_token"]
    entrypoint = " ".join(services["agent"]["entrypoint"])
    assert f"{token.envvar}=" in entrypoint and "/run/secrets/agent_token" in entrypoint


# --- the Prometheus tools ------------------------------------------------------------------------


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)


def test_promtool_check_config(promtool_bin: str) -> None:
    result = _run([promtool_bin, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(promtool_bin: str) -> None:
    result = _run([promtool_bin, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(prometheus_rules())} rules found" in result.stdout


def test_amtool_check_config(amtool_bin: str) -> None:
    result = _run([amtool_bin, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
