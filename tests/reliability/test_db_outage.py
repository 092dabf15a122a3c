"""The database (registry + prediction log) is unavailable for a while.

It is a PostgreSQL database of this test's own, made unreachable with
``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend`` (see ``PgDatabase``): every registry
read, prediction-log write, feedback write and agent lease fails as if the server were gone.

During the outage the replica keeps answering /predict from the champion it holds, counts
the prediction-log rows it cannot write, and refuses /feedback with a 503 (never a false
acknowledgement); the agent keeps ticking, every check inconclusive, and its failing streak
does not move. The champion is healthy and the agent needs only 2 failing ticks to roll back,
so an agent that counted an outage as a failure would roll back here. Afterwards everything
recovers: labels are accepted, rows are written, the agent sees data again, and the replica
still follows the registry.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_env import make_env
from reliability_support import (
    MODEL,
    PRUNEGUARD,
    AgentProcess,
    PgDatabase,
    metric,
    predict_version,
    rollbacks,
    send_labelled_traffic,
)
from serving_support import Server, wait_for

from pruneguard.registry.predictions import read_window

REQUESTS = 160
OUTAGE_TICKS = 5  # > 2 x the threshold: a streak counting outages would have rolled back


def _during_outage(server: Server, agent: AgentProcess, env: Any, home: Path, url: str) -> None:
    champion = env.champion.split(":", 1)[1]
    written = metric(server.url, "pruneguard_predlog_written_total", model=MODEL)
    blocked_at = time.time()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(20):  # serving continues from the models it holds
            assert predict_version(server.url) == champion, i
        fb = client.post("/feedback", json={"request_id": "during-outage", "label": 3})
        assert fb.status_code == 503, fb.text
        assert "database" in fb.json()["error"]
    wait_for(
        lambda: (metric(server.url, "pruneguard_predlog_dropped_total", reason="error") or 0) > 0
    )
    assert metric(server.url, "pruneguard_predlog_written_total", model=MODEL) == written

    # The agent keeps ticking; each tick saw no data (every check inconclusive), and neither
    # the failing streak nor the phase moved.
    wait_for(lambda: agent.ticked_after(blocked_at, ticks=OUTAGE_TICKS), timeout=120)
    assert agent.metric("pruneguard_agent_failed_checks") == 0.0
    assert agent.metric("pruneguard_agent_analysis_status") == 1.0  # healthy, not failing
    assert agent.metric("pruneguard_window_samples", kind="labelled") == 0.0
    assert math.isnan(agent.metric("pruneguard_accuracy", variant="champion") or 0.0)
    assert agent.metric("pruneguard_rollbacks_total", trigger="checks") == 0.0

    _assert_once_claims_no_verdict(home, url)


def _assert_once_claims_no_verdict(home: Path, url: str) -> None:
    """`pruneguard agent once NAME --json` during the outage either says, in one line, that it
    cannot reach the database, or reports every check inconclusive; it never decides."""
    argv = [PRUNEGUARD, "agent", "once", MODEL, "--json", "--db-url", url, "--home", str(home)]
    once = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in once.stderr, once.stderr
    if once.returncode != 0:
        assert "cannot reach the registry database" in once.stderr and once.stdout == ""
        return
    result = json.loads(once.stdout)
    assert {check["outcome"] for check in result["checks"]} == {"inconclusive"}
    assert result["decision"]["action"] == "none" and result["rollback"] is None


def _healthy(agent: AgentProcess, *, since: float) -> bool:
    """A tick after ``since`` analysed the labelled traffic and found the champion healthy
    (phase 1 needs a passing check)."""
    return (
        agent.ticked_after(since, ticks=1)
        and (agent.metric("pruneguard_window_samples", kind="labelled") or 0) >= REQUESTS
        and agent.metric("pruneguard_agent_analysis_status") == 1.0
    )


@pytest.mark.slow
def test_database_outage_serving_continues_and_no_false_rollback(
    pg_database: PgDatabase, pruneguard_home: Path, artifact_factory: Any
) -> None:
    url = pg_database.url
    env = make_env(pruneguard_home, artifact_factory, db_url=url)
    server = Server(env.home, db_url=url, extra=("--shadow-sample", "1.0"))
    agent: AgentProcess | None = None
    try:
        server.wait_ready()
        # Labels are the champion's answers: the pruned champion is healthy.
        send_labelled_traffic(
            [server.url], env.predict, label_tag=env.champion, requests=REQUESTS, seed=3
        )
        wait_for(lambda: len(read_window(env.registry.engine, MODEL, since_ts=0.0)) >= 2 * REQUESTS)
        agent = AgentProcess(env.home, db_url=url, threshold=2, min_samples=100)
        wait_for(lambda: _healthy(agent, since=0.0), timeout=120)
        before = [e.to_dict() for e in env.registry.history(MODEL)]

        pg_database.block()
        try:
            _during_outage(server, agent, env, env.home, url)
        finally:
            pg_database.unblock()

        # Recovery: the agent sees data again and passes; nothing was rolled back.
        recovered_at = time.time()
        wait_for(lambda: _healthy(agent, since=recovered_at), timeout=120)
        assert agent.metric("pruneguard_rollbacks_total", trigger="checks") == 0.0
        assert rollbacks(env.registry) == []
        assert [e.to_dict() for e in env.registry.history(MODEL)] == before

        # Serving recovers: labels are acknowledged, rows are written, aliases are followed.
        reply = httpx.post(f"{server.url}/predict", json={"inputs": [[[[3.0] * 8] * 8]]})
        request_id = reply.json()["request_id"]

        def labelled() -> bool:
            fb = httpx.post(f"{server.url}/feedback", json={"request_id": request_id, "label": 1})
            return fb.status_code == 200

        wait_for(labelled, timeout=60, interval=0.5)
        wait_for(
            lambda: (
                request_id in set(read_window(env.registry.engine, MODEL, since_ts=0.0).request_id)
            )
        )
        env.registry.promote(env.shadow, actor="test", reason="after the outage")
        dense = env.shadow.split(":", 1)[1]
        wait_for(lambda: predict_version(server.url) == dense, timeout=60)
        assert server.alive() and agent.proc.poll() is None
    finally:
        if agent is not None:
            assert agent.stop() == 0, agent.log()[-3000:]
        server.stop()
        env.registry.close()
