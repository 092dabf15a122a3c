"""Two replicas on one machine, started the plain way (`pruneguard serve NAME --port P` twice
with the same PRUNEGUARD_HOME, as in the miniature scale-out): Prometheus scrapes each, so
each /metrics must count that replica's own requests.

BentoML keeps prometheus_client's multiprocess files in ``$BENTOML_HOME/
prometheus_multiproc_dir`` and empties that directory whenever a server starts. Both
replicas derive BENTOML_HOME from the shared home, so the second start deletes the first
replica's live metric files: from then on the first replica's /metrics shows the second
replica's counters and its own increments are lost.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from reliability_support import MODEL, metric
from serving_support import ROW, Server, make_models


def _champion_rows(server: Server) -> float:
    return (
        metric(server.url, "pruneguard_predictions_total", model=MODEL, variant="champion") or 0.0
    )


@pytest.mark.slow
def test_two_replicas_sharing_a_home_each_report_their_own_requests(
    pruneguard_home: Path, tmp_path: Path
) -> None:
    models = make_models(pruneguard_home, tmp_path / "artifacts")
    first, second = Server(pruneguard_home), Server(pruneguard_home)
    try:
        first.wait_ready()
        second.wait_ready()
        for _ in range(5):
            reply = httpx.post(f"{first.url}/predict", json={"inputs": [ROW]}, timeout=30)
            assert reply.status_code == 200, reply.text
        counts = {"first": _champion_rows(first), "second": _champion_rows(second)}
        assert counts == {"first": 5.0, "second": 0.0}, (
            "each replica's pruneguard_predictions_total should count its own requests; "
            f"got {counts} (a shared $BENTOML_HOME/prometheus_multiproc_dir)"
        )
    finally:
        first.stop()
        second.stop()
        models.registry.close()
