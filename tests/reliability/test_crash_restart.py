"""A serving replica killed with SIGKILL in the middle of traffic, then restarted.

A 200 from /feedback promises the label is committed: every acknowledged label must be in
the feedback table after the crash. Serving never writes registry state, so versions,
aliases, events and the revision must be exactly as before, and every version must still
pass its sha256 check. The restarted replica serves the same champion and keeps logging.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from reliability_support import MODEL, kill_tree, predict_version, registry_state
from serving_support import Server, make_models, wait_for

from pruneguard.registry.predictions import feedback, read_window


class Traffic:
    """One client sending /predict then /feedback in a loop; remembers acknowledged labels."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[str, int] = {}
        self.failures = 0  # requests that got no HTTP answer (the crash)
        self.unexpected: list[str] = []  # answers other than 200 while the replica was up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(5)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    self._one(client, rng)
                except httpx.HTTPError:
                    self.failures += 1
                    self._stop.wait(0.05)

    def _one(self, client: httpx.Client, rng: np.random.Generator) -> None:
        row = rng.uniform(0, 16, size=(1, 1, 8, 8)).tolist()
        reply = client.post("/predict", json={"inputs": row})
        if reply.status_code != 200:
            self.unexpected.append(f"/predict {reply.status_code}: {reply.text[:200]}")
            return
        request_id = reply.json()["request_id"]
        label = int(rng.integers(0, 10))
        fb = client.post("/feedback", json={"request_id": request_id, "label": label})
        if fb.status_code == 200:
            self.acked[request_id] = label
        else:
            self.unexpected.append(f"/feedback {fb.status_code}: {fb.text[:200]}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _stored_labels(engine: sa.Engine, ids: list[str]) -> dict[str, int]:
    query = sa.select(feedback.c.request_id, feedback.c.label).where(feedback.c.request_id.in_(ids))
    with engine.connect() as conn:
        return {row.request_id: row.label for row in conn.execute(query)}


@pytest.mark.slow
def test_sigkill_during_traffic_loses_no_acknowledged_feedback(
    pruneguard_home: Path, tmp_path: Path
) -> None:
    models = make_models(pruneguard_home, tmp_path / "artifacts")
    before = registry_state(models.registry)
    server = Server(pruneguard_home, extra=("--shadow-sample", "1.0"))
    restarted: Server | None = None
    try:
        server.wait_ready()
        traffic = Traffic(server.url)
        try:
            wait_for(lambda: len(traffic.acked) >= 40, timeout=120)
            killed = kill_tree(server.proc)
            assert len(killed) >= 2  # the BentoML arbiter and its worker(s)
            wait_for(lambda: traffic.failures > 0)  # the client saw the crash
        finally:
            traffic.stop()
        acked = dict(traffic.acked)
        assert traffic.unexpected == []

        # Nothing acknowledged is lost; serving changed no registry state; files intact.
        assert _stored_labels(models.registry.engine, list(acked)) == acked
        assert registry_state(models.registry) == before
        assert all(models.registry.verify(v.tag)["ok"] for v in models.registry.list(MODEL))
        with models.registry.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"

        restarted = Server(pruneguard_home, extra=("--shadow-sample", "1.0"))
        restarted.wait_ready()
        assert predict_version(restarted.url) == models.champion_version
        reply = httpx.post(f"{restarted.url}/predict", json={"inputs": [[[[2.0] * 8] * 8]]})
        new_id = reply.json()["request_id"]
        fb = httpx.post(f"{restarted.url}/feedback", json={"request_id": new_id, "label": 4})
        assert fb.status_code == 200, fb.text

        def logged() -> bool:
            frame = read_window(models.registry.engine, MODEL, since_ts=0.0)
            return set(frame[frame.request_id == new_id].variant) == {"champion", "shadow"}

        wait_for(logged)
        assert _stored_labels(models.registry.engine, [*acked, new_id]) == {**acked, new_id: 4}
        assert registry_state(models.registry) == before
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()
        models.registry.close()
