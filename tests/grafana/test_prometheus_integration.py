"""A real Prometheus scrapes pruneguard: the dashboard's queries return data and the drift alert
of rules.yml fires when drift is injected.

Targets: the real ``pruneguard serve`` process (serving + BentoML metrics, real traffic, a real
alias move for a reload) and the agent's real :class:`agent.metrics.AgentMetrics` served from
this process, so drift and a rollback can be injected without waiting for the agent's windows.
A real ``pruneguard agent run`` process runs alongside: its ``/metrics`` is linted and the
dashboard's report link is followed to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from monitoring_files import (
    PROMETHEUS_CONFIG,
    ROOT,
    dashboard_queries,
    load_dashboard,
    load_yaml,
    substitute,
)
from serving_support import (
    MODEL,
    PRUNEGUARD,
    Models,
    Server,
    free_port,
    make_models,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.slow

# Prometheus scrapes and evaluates every second here; windows span several scrapes.
RATE_INTERVAL = "10s"


class AgentProcess:
    """A real `pruneguard agent run` on a free port. Its first tick writes the report the
    dashboard links to; the long interval keeps later ticks (and their CPU) out of the test."""

    def __init__(self, home: Path) -> None:
        env = dict(os.environ, PRUNEGUARD_HOME=str(home), BENTOML_HOME=str(home / "bentoml"))
        env.pop("PRUNEGUARD_DB_URL", None)
        self.log_path = home / "agent.log"
        self._log = self.log_path.open("wb")
        argv = [PRUNEGUARD, "agent", "run", "--model", MODEL, "--port", "0", "--home", str(home)]
        argv += ["--interval", "600", "--report-every", "300"]
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def url(self) -> str:
        def announced() -> str | None:
            assert self.proc.poll() is None, self.log_path.read_text()
            match = re.search(r"http://127\.0\.0\.1:\d+", self.log_path.read_text())
            return match.group(0) if match else None

        return str(wait_for(announced, timeout=60))

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@dataclass
class Stack:
    prometheus: str
    service: Server
    agent: Any  # agent.metrics.AgentMetrics, served from this process
    real_agent_url: str
    models: Models

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(
            httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        )


def _test_rules(dest: Path) -> None:
    """rules.yml with the drift alert's `for` shortened to 1s, so it fires within seconds."""
    rules = load_yaml(ROOT / "grafana" / "prometheus" / "rules.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "PruneguardDriftDetected":
                rule["for"] = "1s"
    dest.write_text(yaml.safe_dump(rules, sort_keys=False))


def _test_config(dest: Path, targets: dict[str, str]) -> None:
    """grafana/prometheus/prometheus.yml with this test's targets and a 1 s cadence."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config.pop("alerting")
    config["scrape_configs"] = [
        dict(job, static_configs=[{"targets": [targets[job["job_name"]]]}])
        for job in config["scrape_configs"]
        if job["job_name"] in targets
    ]
    assert len(config["scrape_configs"]) == len(targets)
    dest.write_text(yaml.safe_dump(config, sort_keys=False))


def _agent_exporter(model: str) -> tuple[Any, Any, str]:
    from prometheus_client import start_http_server

    from pruneguard.agent.metrics import AgentMetrics

    metrics = AgentMetrics()
    metrics.declare(model)
    for gauge, value in (
        (metrics.drift_share, 0.05),
        (metrics.drift_detected, 0),
        (metrics.accuracy_gap, 0.004),
        (metrics.agreement_ratio, 0.97),
        (metrics.failed_checks, 0),
        (metrics.analysis_status, 1),
    ):
        gauge.labels(model=model).set(value)
    for variant, value in (("champion", 0.95), ("shadow", 0.954)):
        metrics.accuracy.labels(model=model, variant=variant).set(value)
    for kind, value in (("rows", 900), ("pairs", 880), ("labelled", 400)):
        metrics.window_samples.labels(model=model, kind=kind).set(value)
    metrics.last_run.labels(model=model).set_to_current_time()
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    return metrics, server, f"127.0.0.1:{server.server_port}"


def _traffic(url: str, stop: threading.Event) -> None:
    """Labelled requests, as a client with ground truth would send them."""
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            row = [[[float((r * 8 + c + i) % 16) for c in range(8)] for r in range(8)]]
            with contextlib.suppress(httpx.HTTPError, KeyError):  # e.g. 503 during a swap
                answer = client.post("/predict", json={"inputs": [row]}).json()
                client.post("/feedback", json={"request_id": answer["request_id"], "label": i % 10})
            i += 1
            stop.wait(0.05)


def _start_prometheus(
    binary: str, workdir: Path, port: int, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def stack(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("home")
    work = tmp_path_factory.mktemp("prometheus")
    models = make_models(home, home / "artifacts")
    service = Server(home)
    real_agent = AgentProcess(home)
    agent, agent_server, agent_addr = _agent_exporter(MODEL)
    stop = threading.Event()
    prom = None
    log = (work / "prometheus.log").open("wb")
    try:
        service.wait_ready()
        # One rejected input, for the dashboard's "rejected/s by problem" series.
        assert httpx.post(f"{service.url}/predict", json={"inputs": [[1.0]]}).status_code == 400
        _test_rules(work / "rules.yml")
        _test_config(
            work / "prometheus.yml",
            {"pruneguard-service": f"127.0.0.1:{service.port}", "pruneguard-agent": agent_addr},
        )
        port = free_port()
        prom = _start_prometheus(prometheus_bin, work, port, log)
        threading.Thread(target=_traffic, args=(service.url, stop), daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        yield Stack(url, service, agent, real_agent.url(), models)
    finally:
        stop.set()
        if prom is not None:
            prom.terminate()
            prom.wait(20)
        log.close()
        agent_server.shutdown()
        agent_server.server_close()
        real_agent.stop()
        service.stop()
        models.registry.close()


def _targets_up(stack: Stack) -> dict[str, str] | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):  # not listening / not ready yet
        body = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=5).json()
        health = {t["labels"]["job"]: t["health"] for t in body["data"]["activeTargets"]}
        if health and all(h == "up" for h in health.values()):
            return health
    return None


def test_prometheus_scrapes_the_service_and_the_agent(stack: Stack) -> None:
    health = wait_for(lambda: _targets_up(stack), timeout=60)
    assert health == {"pruneguard-service": "up", "pruneguard-agent": "up"}
    assert stack.query(f'pruneguard_model_info{{model="{MODEL}", job="pruneguard-service"}} == 1')
    assert stack.query(f'pruneguard_drift_share{{model="{MODEL}", job="pruneguard-agent"}}')


def _empty_dashboard_queries(stack: Stack) -> list[str]:
    empty = []
    for query in dashboard_queries(load_dashboard()):
        expr = substitute(query.expr, model=MODEL, rate_interval=RATE_INTERVAL, range_="2m")
        if expr.startswith("label_values("):  # Grafana's variable function, not PromQL
            metric = expr.removeprefix("label_values(").split(",")[0]
            expr = f"count by (model) ({metric})"
        if not stack.query(expr):
            empty.append(f"{query.where}: {expr}")
    return empty


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    wait_for(lambda: _targets_up(stack), timeout=60)
    # Events the annotations show: a rollback by the agent, a reload after an alias move.
    wait_for(lambda: stack.query(f'pruneguard_rollbacks_total{{model="{MODEL}"}}'), timeout=30)
    stack.agent.rollbacks.labels(model=MODEL, trigger="checks").inc()
    stack.models.registry.set_alias(MODEL, "champion", stack.models.shadow, actor="test")
    remaining: list[str] = []

    def all_answered() -> bool:
        remaining[:] = _empty_dashboard_queries(stack)
        return not remaining

    with contextlib.suppress(AssertionError):
        wait_for(all_answered, timeout=40, interval=1.0)
    assert remaining == [], "dashboard queries without data:\n" + "\n".join(remaining)
    (champion,) = stack.query(f'pruneguard_model_info{{model="{MODEL}", variant="champion"}} == 1')
    assert champion["metric"]["version"] == stack.models.shadow_version
    # The rollback alert needs no `for`: the injected rollback fires it.
    wait_for(lambda: _alert_state(stack, "PruneguardRollback") == {MODEL: "firing"}, timeout=30)


def _alert_state(stack: Stack, name: str) -> dict[str, str]:
    return {
        a["labels"].get("model", ""): a["state"]
        for a in stack.alerts()
        if a["labels"]["alertname"] == name
    }


def test_injected_drift_fires_the_drift_alert(stack: Stack) -> None:
    wait_for(lambda: _targets_up(stack), timeout=60)
    time.sleep(2)  # a few rule evaluations with drift absent
    assert _alert_state(stack, "PruneguardDriftDetected") == {}
    stack.agent.drift_share.labels(model=MODEL).set(0.75)
    stack.agent.drift_detected.labels(model=MODEL).set(1)
    wait_for(
        lambda: _alert_state(stack, "PruneguardDriftDetected") == {MODEL: "firing"}, timeout=30
    )
    (alert,) = [a for a in stack.alerts() if a["labels"]["alertname"] == "PruneguardDriftDetected"]
    assert "75%" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("#pruneguarddriftdetected")
    # The agent ticks (fresh timestamp) and is scraped: no agent-down alert meanwhile.
    assert _alert_state(stack, "PruneguardAgentNotRunning") == {}


def _lint(promtool_bin: str, text: bytes) -> tuple[int, bytes]:
    result = subprocess.run(
        [promtool_bin, "check", "metrics"], input=text, capture_output=True, check=False, timeout=60
    )
    return result.returncode, result.stdout + result.stderr


def test_service_metrics_lint_clean(stack: Stack, promtool_bin: str) -> None:
    text = httpx.get(f"{stack.service.url}/metrics", timeout=10).content
    assert b"bentoml_service_request_total" in text
    for name in ("pruneguard_model_info", "pruneguard_inference_duration_seconds_bucket"):
        assert f"\n{name}{{".encode() in text
    assert _lint(promtool_bin, text) == (0, b"")


def test_agent_metrics_lint_clean(stack: Stack, promtool_bin: str) -> None:
    from pruneguard.agent.metrics import METRIC_NAMES

    text = httpx.get(f"{stack.real_agent_url}/metrics", timeout=10).content
    for name in METRIC_NAMES:
        assert f"# TYPE {name} ".encode() in text, name
    assert _lint(promtool_bin, text) == (0, b"")


def test_dashboard_link_opens_the_agents_latest_report(stack: Stack) -> None:
    dashboard = load_dashboard()
    (link,) = dashboard["links"]
    url = link["url"].replace("${agent_url}", stack.real_agent_url).replace("${model}", MODEL)

    def report() -> httpx.Response | None:
        resp = httpx.get(url, timeout=30)
        return resp if resp.status_code == 200 else None

    resp = wait_for(report, timeout=90, interval=1.0)
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.content.lower().startswith(b"<!doctype html") and MODEL.encode() in resp.content
