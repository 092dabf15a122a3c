"""Helpers for the reliability suite: a PostgreSQL database that a test can take away,
real `pruneguard agent run` processes, a crash (SIGKILL of a whole process tree), labelled
traffic through real replicas, and reading Prometheus samples."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

MODEL = "digits"
PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")


class PgDatabase:
    """A fresh database on the shared PostgreSQL server.

    An outage is simulated for this database only: ``ALLOW_CONNECTIONS false`` refuses every
    new connection (even the owner's) and ``pg_terminate_backend`` cuts the open ones, so
    registry reads, prediction-log writes and the agent's lease all fail exactly as when the
    server is gone, while the other tests' databases on the same server carry on.
    """

    def __init__(self, admin_url: str, name: str) -> None:
        import sqlalchemy as sa

        self.name = name
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    @classmethod
    def create(cls, admin_url: str) -> PgDatabase:
        database = cls(admin_url, f"pg_reliability_{uuid.uuid4().hex[:12]}")
        database._sql(f'CREATE DATABASE "{database.name}"')
        return database

    def _sql(self, statement: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(statement)

    def block(self) -> None:
        """Refuse new connections and terminate the open ones: the database is gone."""
        self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    def unblock(self) -> None:
        self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def drop(self) -> None:
        try:
            self.unblock()
            self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            self.admin.dispose()


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *descendants(child)]
    return found


def kill_tree(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL ``proc`` and every process under it at once (a crashed pod or machine: the
    BentoML arbiter and its workers die together, nothing gets to clean up)."""
    victims = [*descendants(proc.pid), proc.pid]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)
    for pid in victims[:-1]:  # reparented to init, which reaps them
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            if time.monotonic() > deadline:
                raise AssertionError(f"process {pid} survived SIGKILL")
            time.sleep(0.05)
    return victims


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def samples(url: str) -> list[Any] | None:
    """Every sample on ``url``/metrics (None while it does not answer)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def metric(url: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` whose labels include ``labels`` (summed over the rest,
    e.g. BentoML's per-worker ``pid``); None when absent."""
    found = samples(url)
    if found is None:
        return None
    values = [
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return float(sum(values)) if values else None


class AgentProcess:
    """A real ``pruneguard agent run`` watching MODEL, with /metrics on a free port."""

    def __init__(
        self,
        home: Path,
        *,
        db_url: str | None = None,
        threshold: int = 2,
        min_samples: int = 100,
        interval: float = 1.0,
        window: float = 3600.0,
        name: str = "agent",
    ) -> None:
        from serving_support import free_port

        self.port = free_port()
        self.interval = interval
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"{name}-{self.port}.log"
        env = {**os.environ, "PRUNEGUARD_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")}
        env.pop("PRUNEGUARD_DB_URL", None)
        argv = [
            PRUNEGUARD, "agent", "run", "--model", MODEL, "--interval", str(interval),
            "--window", str(window), "--threshold", str(threshold), "--min-samples",
            str(min_samples), "--port", str(self.port), "--report-every", "inf",
            "--no-report-on-rollback",
        ]  # fmt: skip
        if db_url:
            argv += ["--db-url", db_url]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def actor_suffix(self) -> str:
        """How this process's actor string (``agent:<host>:<pid>``) ends."""
        return f":{self.proc.pid}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ticked_after(self, ts: float, *, ticks: int) -> bool:
        """True once this agent finished a tick ``ticks`` intervals after unix time ``ts``
        (``pruneguard_agent_last_run_timestamp_seconds``, exported by the lease holder)."""
        last = self.metric("pruneguard_agent_last_run_timestamp_seconds")
        return last is not None and last >= ts + ticks * self.interval

    def metric(self, name: str, **labels: str) -> float | None:
        return metric(self.url, name, model=MODEL, **labels)

    def stop(self) -> int:
        """SIGTERM (the agent gives its lease back) and wait; returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    return self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
                    raise
            return int(self.proc.returncode)
        finally:
            self._log.close()


def send_labelled_traffic(
    urls: Sequence[str],
    predict: Any,
    *,
    label_tag: str,
    requests: int,
    seed: int,
    batch: int = 20,
) -> set[str]:
    """``requests`` rows in batches, round-robin over the replicas at ``urls``; each row's
    /feedback label is what version ``label_tag`` answers (``predict(tag, features)``), sent
    to the next replica. Returns the model_version values the replicas answered with."""
    rng = np.random.default_rng(seed)
    versions: set[str] = set()
    clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
    try:
        for i in range(requests // batch):
            rows = rng.uniform(0, 16, size=(batch, 1, 8, 8)).astype(np.float32)
            reply = clients[i % len(clients)].post("/predict", json={"inputs": rows.tolist()})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            versions.add(body["model_version"])
            labels = predict(label_tag, rows.reshape(batch, 64))
            feedback_client = clients[(i + 1) % len(clients)]
            for request_id, label in zip(body["request_ids"], labels, strict=True):
                fb = feedback_client.post(
                    "/feedback", json={"request_id": request_id, "label": int(label)}
                )
                assert fb.status_code == 200, fb.text
    finally:
        for client in clients:
            client.close()
    return versions


def predict_version(url: str) -> str | None:
    """The model_version one /predict on ``url`` answers with (None on any failure)."""
    try:
        reply = httpx.post(f"{url}/predict", json={"inputs": [[[[1.0] * 8] * 8]]}, timeout=30)
    except httpx.HTTPError:
        return None
    return str(reply.json()["model_version"]) if reply.status_code == 200 else None


def registry_state(registry: Any) -> dict[str, Any]:
    """Everything about a model that serving must never change: versions, aliases, events,
    the revision."""
    return {
        "versions": [(v.tag, v.kind) for v in registry.list(MODEL)],
        "aliases": registry.aliases(MODEL),
        "events": [e.to_dict() for e in registry.history(MODEL)],
        "revision": registry.revision(),
    }


def rollbacks(registry: Any) -> list[Any]:
    return [e for e in registry.history(MODEL) if e.action == "rollback"]
