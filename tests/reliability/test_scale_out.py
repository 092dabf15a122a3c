"""Scale-out in miniature: two `pruneguard serve` replicas and two `pruneguard agent run`
processes on one PostgreSQL database (the registry and the prediction log together).

Labelled traffic through both replicas makes the pruned champion measurably worse than the
dense shadow. Exactly one agent (the lease holder) rolls back, the other never acts, both
replicas switch to the dense version by themselves, and when the active agent leaves the
standby takes over without a second rollback. Each replica has the layout of a pod in
deploy/k8s: the model store shared, the rest of BENTOML_HOME its own. Runs in CI
(postgres_url fails there when PostgreSQL is missing); skips on a machine without it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_env import make_env
from click.testing import CliRunner
from reliability_support import (
    MODEL,
    AgentProcess,
    PgDatabase,
    metric,
    predict_version,
    rollbacks,
    send_labelled_traffic,
)
from serving_support import Server, wait_for

from pruneguard.registry.predictions import read_window

REQUESTS = 240


def _history_json(url: str) -> list[dict[str, Any]]:
    from pruneguard.registry.cli import models

    result = CliRunner().invoke(models, ["--db-url", url, "history", "--all", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


def _lease_owner(registry: Any) -> str | None:
    """Who holds the model's agent lease (``Registry.try_lock``'s row)."""
    import sqlalchemy as sa

    from pruneguard.registry import db

    query = sa.select(db.locks.c.owner).where(db.locks.c.key == f"agent:{MODEL}")
    with registry.engine.connect() as conn:
        return conn.execute(query).scalar_one_or_none()


@pytest.mark.slow
def test_two_replicas_two_agents_exactly_one_rollback(
    pg_database: PgDatabase, pruneguard_home: Path, artifact_factory: Any
) -> None:
    url = pg_database.url
    env = make_env(pruneguard_home, artifact_factory, db_url=url)
    pruned, dense = env.champion.split(":", 1)[1], env.shadow.split(":", 1)[1]
    replicas = [Server(env.home, db_url=url, extra=("--shadow-sample", "1.0")) for _ in "ab"]
    agents: list[AgentProcess] = []
    try:
        for server in replicas:
            server.wait_ready()
        urls = [s.url for s in replicas]
        versions = send_labelled_traffic(
            urls, env.predict, label_tag=env.shadow, requests=REQUESTS, seed=11
        )
        assert versions == {pruned}

        def logged() -> bool:
            frame = read_window(env.registry.engine, MODEL, since_ts=0.0)
            return int((frame.variant == "shadow").sum()) >= REQUESTS

        wait_for(logged, timeout=60)
        agents = [AgentProcess(env.home, db_url=url, name=f"agent{i}") for i in range(2)]
        (event,) = wait_for(lambda: rollbacks(env.registry), timeout=180, interval=0.5)

        # Exactly one agent acted: the lease holder; the other stood by.
        (active,) = [a for a in agents if event.actor.endswith(a.actor_suffix)]
        (standby,) = [a for a in agents if a is not active]
        assert event.actor.startswith("agent:")
        assert (event.from_version, event.to_version) == (env.champion, env.shadow)
        rolled_back_at = time.time()
        wait_for(lambda: active.ticked_after(rolled_back_at, ticks=3), timeout=60)
        assert active.metric("pruneguard_agent_analysis_status") == 4.0  # cooldown
        assert len(rollbacks(env.registry)) == 1
        assert active.metric("pruneguard_rollbacks_total", trigger="checks") == 1.0
        assert standby.metric("pruneguard_rollbacks_total", trigger="checks") == 0.0
        assert standby.proc.poll() is None
        assert _lease_owner(env.registry) == event.actor

        # Both replicas follow the one rollback, each by itself.
        for server in replicas:
            wait_for(lambda server=server: predict_version(server.url) == dense, timeout=60)
            info = metric(server.url, "pruneguard_model_info", variant="champion", version=dense)
            assert info == 1.0  # what Prometheus scraping this replica sees

        # The active agent leaves (SIGTERM gives the lease back): the standby takes over,
        # analyses the new champion, and does not roll back a second time.
        assert active.stop() == 0, active.log()[-3000:]
        wait_for(lambda: (_lease_owner(env.registry) or "").endswith(standby.actor_suffix))
        took_over_at = time.time()
        wait_for(lambda: standby.ticked_after(took_over_at, ticks=3), timeout=60)
        assert len(rollbacks(env.registry)) == 1
        assert standby.metric("pruneguard_rollbacks_total", trigger="checks") == 0.0
    finally:
        for agent in agents:
            agent.stop()
        for server in replicas:
            server.stop()
        env.registry.close()

    recorded = [e for e in _history_json(url) if e["action"] == "rollback"]
    assert [(e["actor"], e["model"], e["to_version"]) for e in recorded] == [
        (event.actor, MODEL, env.shadow)
    ]
    gap = next(c for c in recorded[0]["evidence"]["checks"] if c["name"] == "accuracy_gap")
    assert gap["outcome"] == "fail" and gap["samples"] >= 100
