"""Must-show 4: two `pruneguard serve` processes share one PostgreSQL registry and both
switch after one rollback. Runs in CI (the postgres_url fixture fails there if missing)."""

from __future__ import annotations

from pathlib import Path

import httpx
from serving_support import MODEL, ROW, Server, make_models, wait_for


def _version(server: Server) -> str:
    response = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def test_both_replicas_follow_one_rollback(isolated_pg_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    models = make_models(home, tmp_path / "artifacts", db_url=isolated_pg_url)
    models.registry.promote(models.shadow, actor="test", reason="before the replicas start")
    replicas = [Server(home, db_url=isolated_pg_url) for _ in range(2)]
    try:
        for server in replicas:
            server.wait_ready()
        assert [_version(s) for s in replicas] == [models.shadow_version] * 2

        event = models.registry.rollback(MODEL, actor="test", reason="one rollback")
        assert event.to_version == models.champion
        for server in replicas:
            wait_for(lambda server=server: _version(server) == models.champion_version)
        assert all(s.alive() for s in replicas)

        # Timeouts as in _version: the 5 s default is too short for a loaded 2-core CI machine.
        answer = httpx.post(f"{replicas[1].url}/predict", json={"inputs": [ROW]}, timeout=30)
        assert answer.status_code == 200, answer.text
        feedback = httpx.post(
            f"{replicas[0].url}/feedback",
            json={"request_id": answer.json()["request_ids"][0], "label": 3},
            timeout=30,
        )
        assert feedback.status_code == 200, feedback.text
    finally:
        for server in replicas:
            server.stop()
        models.registry.close()
