"""Shared parts of the serving benchmarks: a throwaway registry with two real ONNX versions,
server processes on loopback, and a closed-loop HTTP load generator.

Progress goes to stderr; each benchmark prints one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests" / "support"))  # artifact_factory: a real ONNX graph + manifest

MODEL = "digits"
ROW = np.random.default_rng(0).uniform(0, 16, size=(1, 1, 8, 8)).round(2).tolist()


def log(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workspace:
    home: Path
    champion: str
    shadow: str
    champion_dir: Path
    registry: Any


@contextlib.contextmanager
def workspace() -> Iterator[Workspace]:
    """A temp PRUNEGUARD_HOME with a pruned champion (seed 1) and a dense shadow (seed 2)."""
    with tempfile.TemporaryDirectory(prefix="pruneguard-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["PRUNEGUARD_HOME"] = str(home)
        os.environ["BENTOML_HOME"] = str(home / "bentoml")
        os.environ["BENTOML_DO_NOT_TRACK"] = "True"
        from artifact_factory import make_artifact

        from pruneguard.registry import open_registry

        registry = open_registry(home=home)
        pruned = make_artifact(Path(tmp) / "pruned", name=MODEL, kind="pruned", seed=1)
        dense = make_artifact(Path(tmp) / "dense", name=MODEL, kind="dense", seed=2)
        champion = registry.register(pruned, actor="bench").tag
        shadow = registry.register(dense, actor="bench").tag
        registry.set_alias(MODEL, "champion", champion, actor="bench")
        registry.set_alias(MODEL, "shadow", shadow, actor="bench")
        try:
            yield Workspace(home, champion, shadow, pruned, registry)
        finally:
            registry.close()


class Process:
    """A server process on a free loopback port (stopped with SIGTERM)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(
            list(argv), env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.log_path = log_path

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def pruneguard_server(
    ws: Workspace, *, shadow_sample: float, poll_interval: float = 2.0, name: str = "pg"
) -> Process:
    exe = str(Path(sys.executable).parent / "pruneguard")
    argv = [
        exe,
        "serve",
        MODEL,
        "--port",
        "{port}",
        "--shadow-sample",
        str(shadow_sample),
        "--poll-interval",
        str(poll_interval),
    ]
    return Process(argv, {}, ws.home / f"{name}.log")


def plain_server(ws: Workspace) -> Process:
    onnx = ws.registry.path(ws.champion) / "model.onnx"
    argv = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "plain_service:PlainService",
        "--port",
        "{port}",
        "--host",
        "127.0.0.1",
        "--working-dir",
        str(ROOT / "bench"),
    ]
    return Process(argv, {"PLAIN_ONNX": str(onnx)}, ws.home / "plain.log")


@dataclass
class Sample:
    start: float
    end: float
    status: int
    version: str


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0


def closed_loop(
    url: str,
    *,
    requests: int,
    concurrency: int,
    body: dict[str, Any] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> Load:
    """``concurrency`` clients, each sending its next request when the last one answered;
    ``requests`` in all, or (with ``until``) at least that many and until ``until()``."""
    body = body or {"inputs": [ROW[0]]}
    load = Load()
    lock = threading.Lock()
    remaining = [requests]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while True:
                with lock:
                    if remaining[0] <= 0 and (until is None or until()):
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    r = c.post("/predict", json=body)
                    version = r.json().get("model_version", "") if r.status_code == 200 else ""
                    sample = Sample(start, time.perf_counter(), r.status_code, str(version))
                except httpx.HTTPError:
                    sample = Sample(start, time.perf_counter(), 0, "")
                with lock:
                    load.samples.append(sample)
                    load.errors += sample.status != 200
                if on_sample is not None:
                    on_sample(sample)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return load


@dataclass
class Block:
    """One block of closed-loop load on one server."""

    name: str
    load: Load
    seconds: float
    server_cpu_ms: float  # CPU of the server and its child processes during the block


def alternating_blocks(
    servers: dict[str, Process], *, blocks: int, requests: int, concurrency: int
) -> Iterator[tuple[int, list[Block]]]:
    """Wait for the servers, warm each up (100 requests, not measured), then yield per block
    one :class:`Block` per server, the order alternating (AB, BA, ...) so that every server
    sees the same machine load. The caller starts and stops the servers."""
    for server in servers.values():
        server.wait_ready()
    for server in servers.values():
        closed_loop(server.url, requests=100, concurrency=concurrency)
    for block in range(blocks):
        order = list(servers) if block % 2 == 0 else list(reversed(servers))
        done = []
        for name in order:
            pid = servers[name].proc.pid
            cpu, start = tree_cpu_s(pid), time.perf_counter()
            load = closed_loop(servers[name].url, requests=requests, concurrency=concurrency)
            seconds = time.perf_counter() - start
            done.append(Block(name, load, seconds, (tree_cpu_s(pid) - cpu) * 1000))
        yield block, done


def metric_totals(url: str, sample_name: str) -> dict[str, float]:
    """``sample_name``'s values on ``url``/metrics, summed per label set (as ``k=v,...``)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == sample_name:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def percentiles_ms(samples: Sequence[Sample]) -> dict[str, float]:
    latency = np.array([(s.end - s.start) * 1000 for s in samples])
    return {
        "p50": round(float(np.percentile(latency, 50)), 3),
        "p99": round(float(np.percentile(latency, 99)), 3),
        "mean": round(float(latency.mean()), 3),
    }


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"
