"""A corrupted artifact is pushed and promoted; it is refused and the old version keeps serving.

Two ways it can happen, both tried against a real replica under traffic:

1. The files are damaged in the model store after registration. ``pruneguard models promote``
   refuses (sha256 check, naming the file). Someone who bypasses the registry and moves the
   alias in the database directly still gets nothing served: the replica verifies before it
   loads, counts ``pruneguard_model_reloads_total{result="error"}`` and keeps the old version.
2. The artifact was broken before it was pushed (a model.onnx that is not a model, with a
   manifest that matches it): sha256 passes, the registry promotes it, and the replica's
   load-and-test-inference refuses it. A replica started while it is champion stays not
   ready instead of serving it, and becomes ready once a good version is promoted.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from reliability_support import MODEL, metric, predict_version, registry_state
from serving_support import Server, make_models, wait_for

from pruneguard.registry import db
from pruneguard.registry.artifact import sha256_file


class VersionLog:
    """A client thread recording (status, model_version) of every /predict."""

    def __init__(self, url: str) -> None:
        self.seen: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.wait(0.02):
                reply = client.post("/predict", json={"inputs": [[[[5.0] * 8] * 8]]})
                version = reply.json().get("model_version", "") if reply.status_code == 200 else ""
                self.seen.append((reply.status_code, str(version)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _reload_errors(server: Server) -> float:
    return metric(server.url, "pruneguard_model_reloads_total", model=MODEL, result="error") or 0.0


def _force_champion(engine: sa.Engine, tag: str) -> None:
    """Move the champion in the database directly, as a script bypassing the registry would."""
    where = (db.aliases.c.name == MODEL) & (db.aliases.c.alias == "champion")
    with engine.begin() as conn:
        conn.execute(db.aliases.update().where(where).values(tag=tag))
        conn.execute(db.revision.update().values(value=db.revision.c.value + 1))


def _broken_before_push(artifact: Path) -> Path:
    """``artifact`` with a model.onnx that is not an ONNX model, and a manifest that matches."""
    (artifact / "model.onnx").write_bytes(b"\x08\x09not an onnx graph" * 64)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(artifact / "model.onnx")
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return artifact


def _promote_cli(home: Path, tag: str) -> Any:
    from pruneguard.registry.cli import models

    return CliRunner().invoke(models, ["promote", tag, "--home", str(home), "--actor", "ci:push"])


@pytest.mark.slow
def test_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(
    pruneguard_home: Path, tmp_path: Path, artifact_factory: Any
) -> None:
    models = make_models(pruneguard_home, tmp_path / "artifacts")
    registry, good = models.registry, models.champion_version
    server = Server(pruneguard_home)
    late: Server | None = None
    traffic: VersionLog | None = None
    try:
        server.wait_ready()
        traffic = VersionLog(server.url)

        # 1. Damaged in the store after it was pushed.
        damaged = registry.register(artifact_factory(name=MODEL, seed=3), actor="ci:push").tag
        onnx = registry.path(damaged, verify=False) / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:-7] + b"garbage")
        before = registry_state(registry)
        refused = _promote_cli(pruneguard_home, damaged)
        assert refused.exit_code == 1, refused.output
        assert f"{onnx} fails its sha256 check" in refused.output
        assert "Traceback" not in refused.output
        assert registry_state(registry) == before

        errors = _reload_errors(server)
        _force_champion(registry.engine, damaged)
        wait_for(lambda: _reload_errors(server) == errors + 1)
        assert predict_version(server.url) == good
        status = httpx.post(f"{server.url}/status", json={}).json()
        assert status["champion"] == models.champion and status["revision"] == registry.revision()

        # 2. Broken before it was pushed: the registry cannot tell; the replica can.
        broken_dir = _broken_before_push(artifact_factory(name=MODEL, seed=4))
        broken = registry.register(broken_dir, actor="ci:push").tag
        registry.promote(broken, actor="ci:push", reason="looks fine to the registry")
        wait_for(lambda: _reload_errors(server) == errors + 2)
        assert predict_version(server.url) == good

        # A replica starting now must not serve the broken champion.
        late = Server(pruneguard_home)
        wait_for(lambda: late.alive() and _answers(late.url, "/readyz") == 503, timeout=120)
        reply = httpx.post(f"{late.url}/predict", json={"inputs": [[[[5.0] * 8] * 8]]})
        assert reply.status_code == 503 and "no champion" in reply.json()["error"]

        # A good version promoted: both replicas switch to it.
        registry.promote(models.shadow, actor="test", reason="roll forward to a good version")
        wait_for(lambda: predict_version(server.url) == models.shadow_version)
        late.wait_ready()
        assert predict_version(late.url) == models.shadow_version
        assert _reload_errors(server) == errors + 2
    finally:
        if traffic is not None:
            traffic.stop()
        server.stop()
        if late is not None:
            late.stop()
        registry.close()

    assert traffic.seen and {code for code, _ in traffic.seen} == {200}
    assert {version for _, version in traffic.seen} <= {good, models.shadow_version}
    assert traffic.seen[0][1] == good and traffic.seen[-1][1] == models.shadow_version


def _answers(url: str, path: str) -> int | None:
    try:
        return httpx.get(f"{url}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return None
