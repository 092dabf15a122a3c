"""Serving test helpers: a registry with champion + shadow, and real `pruneguard serve` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

MODEL = "digits"
PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")


@dataclass
class Models:
    registry: Any
    champion: str
    shadow: str
    home: Path

    @property
    def champion_version(self) -> str:
        return self.champion.split(":", 1)[1]

    @property
    def shadow_version(self) -> str:
        return self.shadow.split(":", 1)[1]


def make_models(home: Path, artifacts: Path, *, db_url: str | None = None) -> Models:
    """Register a pruned champion (seed 1) and a dense shadow (seed 2) in a fresh registry."""
    from artifact_factory import make_artifact

    from pruneguard.registry import open_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(home / "bentoml"))
        mp.setenv("BENTOML_DO_NOT_TRACK", "True")
        registry = open_registry(db_url, home=home)
        pruned = make_artifact(artifacts / "pruned", name=MODEL, kind="pruned", seed=1)
        dense = make_artifact(artifacts / "dense", name=MODEL, kind="dense", seed=2)
        champion = registry.register(pruned, actor="test").tag
        shadow = registry.register(dense, actor="test").tag
    registry.set_alias(MODEL, "champion", champion, actor="test")
    registry.set_alias(MODEL, "shadow", shadow, actor="test")
    return Models(registry=registry, champion=champion, shadow=shadow, home=home)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real `pruneguard serve` process on a free loopback port."""

    def __init__(
        self,
        home: Path,
        *,
        db_url: str | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        model: str = MODEL,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"serve-{self.port}.log"
        full_env = dict(os.environ)
        full_env.update(
            PRUNEGUARD_HOME=str(home),
            BENTOML_HOME=str(home / "bentoml"),
            BENTOML_DO_NOT_TRACK="True",
            PRUNEGUARD_LOG_FLUSH="0.1",
        )
        full_env.pop("PRUNEGUARD_DB_URL", None)
        full_env.update(env or {})
        argv = [
            PRUNEGUARD,
            "serve",
            model,
            "--port",
            str(self.port),
            "--poll-interval",
            "0.5",
            *extra,
        ]
        if db_url:
            argv += ["--db-url", db_url]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (generous timeout; not a bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


ROW = [[[float((r * 8 + c) % 16) for c in range(8)] for r in range(8)]]
