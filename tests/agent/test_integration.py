"""End to end: a real `pruneguard serve` process answers traffic, /feedback labels make the
pruned champion measurably worse than the dense shadow, and a real `pruneguard agent run`
process rolls it back; the service switches to the dense version by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from agent_env import MODEL, Env, make_env
from prometheus_client.parser import text_string_to_metric_families
from serving_support import Server, free_port, wait_for

from pruneguard.registry.predictions import read_window

PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")
REQUESTS = 240


@pytest.fixture
def env(pruneguard_home: Path, artifact_factory: Any) -> Iterator[Env]:
    made = make_env(pruneguard_home, artifact_factory)
    yield made
    made.registry.close()


@pytest.fixture
def server(env: Env) -> Iterator[Server]:
    served = Server(env.home, extra=("--shadow-sample", "1.0"))
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def _agent_process(home: Path, port: int, log: Any) -> subprocess.Popen[bytes]:
    environ = {**os.environ, "PRUNEGUARD_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")}
    environ.pop("PRUNEGUARD_DB_URL", None)
    argv = [
        PRUNEGUARD, "agent", "run", "--model", MODEL, "--interval", "1", "--window", "3600",
        "--threshold", "2", "--min-samples", "100", "--port", str(port), "--report-every", "inf", "--no-report-on-rollback",
    ]  # fmt: skip
    return subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)


def _rollbacks(url: str) -> float | None:
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "pruneguard_rollbacks_total" and s.labels == {
                "model": MODEL,
                "trigger": "checks",
            }:
                return s.value
    return None


def _send_labelled_traffic(env: Env, client: httpx.Client) -> set[str]:
    """Requests whose labels are the dense shadow's answers: the shadow is always right."""
    rng = np.random.default_rng(11)
    versions = set()
    for _ in range(REQUESTS // 20):
        batch = rng.uniform(0, 16, size=(20, 1, 8, 8)).astype(np.float32)
        reply = client.post("/predict", json={"inputs": batch.tolist()})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        versions.add(body["model_version"])
        labels = env.predict(env.shadow, batch.reshape(20, 64))
        for request_id, label in zip(body["request_ids"], labels, strict=True):
            fb = client.post("/feedback", json={"request_id": request_id, "label": int(label)})
            assert fb.status_code in (200, 201, 202), fb.text
    return versions


def test_agent_rolls_back_a_served_champion(env: Env, server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert _send_labelled_traffic(env, client) == {env.champion.split(":", 1)[1]}

        def shadow_logged() -> bool:
            frame = read_window(env.registry.engine, MODEL, since_ts=0.0)
            return int((frame.variant == "shadow").sum()) >= REQUESTS

        wait_for(shadow_logged, timeout=60)
        port = free_port()
        log_file = open(env.home / "agent.log", "wb")  # noqa: SIM115 - closed below
        agent = _agent_process(env.home, port, log_file)
        agent_url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _rollbacks(agent_url) == 1.0, timeout=120, interval=0.5)
            assert env.registry.resolve(MODEL, "champion") == env.shadow

            dense = env.shadow.split(":", 1)[1]

            def serves_dense() -> bool:
                reply = client.post("/predict", json={"inputs": [[[[1.0] * 8] * 8]]})
                return reply.status_code == 200 and reply.json()["model_version"] == dense

            wait_for(serves_dense, timeout=60, interval=0.25)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)
                raise
            finally:
                log_file.close()
    log = (env.home / "agent.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    event = next(e for e in reversed(env.registry.history(MODEL)) if e.action == "rollback")
    assert event.actor.startswith("agent:") and event.actor.endswith(f":{agent.pid}")
    assert (event.from_version, event.to_version) == (env.champion, env.shadow)
    gap = next(c for c in event.evidence["checks"] if c["name"] == "accuracy_gap")
    assert gap["outcome"] == "fail" and gap["samples"] >= 100 and gap["p_value"] < 0.01
    assert gap["detail"]["shadow_accuracy"] == 1.0
