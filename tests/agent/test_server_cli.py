"""The agent's HTTP endpoints (a real server on a loopback port) and its CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from agent_env import FAST, MODEL, Env, make_env, value, write_traffic
from click.testing import CliRunner

from pruneguard.agent.cli import agent as agent_cli
from pruneguard.agent.loop import Agent
from pruneguard.agent.server import AgentServer

TOKEN = "t0ken-for-tests"


@pytest.fixture
def env(pruneguard_home: Path, artifact_factory: Any) -> Env:
    return make_env(pruneguard_home, artifact_factory)


def test_metrics_health_and_alert_webhook(env: Env) -> None:
    watcher = Agent(env.registry, config=FAST, actor="agent:test:9")
    server = AgentServer(watcher, port=0, token=TOKEN).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        write_traffic(env, 120, rng=np.random.default_rng(0), labels="champion")
        watcher.tick(MODEL)
        metrics = httpx.get(f"{url}/metrics").text
        assert 'pruneguard_rollbacks_total{model="digits",trigger="alert"} 0.0' in metrics
        assert httpx.get(f"{url}/healthz").json()["models"] == {MODEL: "healthy"}
        assert httpx.get(f"{url}/reports/latest/{MODEL}").status_code == 404
        alert = {"alerts": [{"status": "firing", "labels": {"alertname": "Bad", "model": MODEL}}]}
        assert httpx.post(f"{url}/alerts", json=alert).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{url}/alerts", json=alert, headers=wrong).status_code == 401
        ok = httpx.post(f"{url}/alerts", json=alert, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 202, ok.text
        assert ok.json()["results"][0]["rollback"]["result"] == "done"
        assert env.registry.resolve(MODEL, "champion") == env.shadow
        assert value(watcher, "pruneguard_rollbacks_total", trigger="alert") == 1
    finally:
        server.stop()


def test_alerts_route_is_off_without_a_token(env: Env) -> None:
    server = AgentServer(Agent(env.registry, config=FAST), port=0).start()
    try:
        reply = httpx.post(f"http://127.0.0.1:{server.port}/alerts", json={"alerts": []})
        assert reply.status_code == 404
    finally:
        server.stop()


def test_once_json_prints_checks_and_decision(env: Env) -> None:
    write_traffic(env, 120, rng=np.random.default_rng(1), labels="shadow")
    result = CliRunner().invoke(
        agent_cli,
        [
            "once",
            MODEL,
            "--json",
            "--home",
            str(env.home),
            "--min-samples",
            "100",
            "--threshold",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {c["name"]: c["outcome"] for c in out["checks"]}["accuracy_gap"] == "fail"
    assert out["decision"]["action"] == "rollback" and out["rollback"]["result"] == "done"


def test_once_on_unknown_model_is_inconclusive(env: Env) -> None:
    result = CliRunner().invoke(agent_cli, ["once", "nosuch", "--home", str(env.home)])
    assert result.exit_code == 0, result.output
    assert "inconclusive" in result.output and "decision: none" in result.output
