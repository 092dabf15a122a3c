"""The service and the agent as child processes (started, waited for, stopped)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pruneguard.demo.config import (
    DemoConfig,
    DemoError,
)

__all__ = [
    "Process",
    "free_port",
    "pruneguard_argv",
    "start_agent",
    "start_service",
    "wait_http",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pruneguard_argv() -> list[str]:
    script = Path(sys.executable).parent / "pruneguard"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pruneguard.cli import main; sys.exit(main())"]


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        env = {**os.environ, "PRUNEGUARD_LOG_FLUSH": "0.2"}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 20.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def wait_http(process: Process, url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise DemoError(
                f"{process.name} exited with {process.proc.returncode}:\n{process.tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise DemoError(f"{process.name} not ready at {url} after {timeout_s:.0f} s:\n{process.tail()}")


def start_service(config: DemoConfig, model: str, port: int) -> Process:
    argv = [*pruneguard_argv(), "serve", model, "--home", str(config.home), "--port", str(port),
            "--shadow-sample", "1.0", "--poll-interval", "1"]  # fmt: skip
    return Process("service", argv, config.logs / "serve.log")


def start_agent(config: DemoConfig, model: str, port: int) -> Process:
    argv = [
        *pruneguard_argv(), "agent", "run", "--model", model, "--home", str(config.home),
        "--port", str(port), "--interval", f"{config.interval_s:g}",
        "--window", f"{config.window_s:g}", "--threshold", str(config.threshold),
        "--min-samples", str(config.min_samples), "--report-every", "inf",
    ]  # fmt: skip
    return Process("agent", argv, config.logs / "agent.log")
