"""The serving configuration: one frozen value, resolved once at the edge.

``pruneguard serve`` turns its options into environment variables (:meth:`ServeConfig.to_env`)
and starts ``bentoml serve``; every worker process resolves them back with
:meth:`ServeConfig.from_env`. Each option names its variable (:data:`ENV`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pruneguard.registry.errors import ConfigError
from pruneguard.registry.settings import resolve_settings

__all__ = ["ENV", "SHADOW_MODES", "ServeConfig"]

SHADOW_MODES = ("process", "thread")
# idle: Linux SCHED_IDLE, the shadow process gets only CPU time nothing else wants (a waking
# request preempts it at once); nice: an ordinary process lowered by shadow_nice.
SHADOW_SCHEDS = ("idle", "nice")
DEFAULT_SHADOW_SCHED = "idle" if hasattr(os, "SCHED_IDLE") else "nice"

# field -> environment variable
ENV: dict[str, str] = {
    "model": "PRUNEGUARD_SERVE_MODEL",
    "db_url": "PRUNEGUARD_DB_URL",
    "home": "PRUNEGUARD_HOME",
    "shadow_sample": "PRUNEGUARD_SHADOW_SAMPLE",
    "poll_interval_s": "PRUNEGUARD_POLL_INTERVAL",
    "shadow_queue": "PRUNEGUARD_SHADOW_QUEUE",
    "shadow_mode": "PRUNEGUARD_SHADOW_MODE",
    "shadow_nice": "PRUNEGUARD_SHADOW_NICE",
    "shadow_sched": "PRUNEGUARD_SHADOW_SCHED",
    "log_queue": "PRUNEGUARD_LOG_QUEUE",
    "log_batch": "PRUNEGUARD_LOG_BATCH",
    "log_flush_s": "PRUNEGUARD_LOG_FLUSH",
    "max_batch": "PRUNEGUARD_MAX_BATCH",
    "max_text_chars": "PRUNEGUARD_MAX_TEXT_CHARS",
    "log_text_chars": "PRUNEGUARD_LOG_TEXT_CHARS",
    "max_new_tokens": "PRUNEGUARD_MAX_NEW_TOKENS",
    "retention_s": "PRUNEGUARD_RETENTION_S",
    "retention_rows": "PRUNEGUARD_RETENTION_ROWS",
    "ort_threads": "PRUNEGUARD_ORT_THREADS",
    "workers": "PRUNEGUARD_SERVE_WORKERS",
    "admin_token": "PRUNEGUARD_ADMIN_TOKEN",
}


@dataclass(frozen=True)
class ServeConfig:
    """What one serving replica needs. Defaults suit a laptop; see docs/serving.md."""

    model: str
    db_url: str = ""  # "" -> the registry's default (PRUNEGUARD_DB_URL or SQLite under home)
    home: Path = Path(".pruneguard")
    shadow_sample: float = 1.0  # fraction of requests mirrored to the shadow
    poll_interval_s: float = 2.0  # how often the registry revision is checked
    shadow_queue: int = 256  # pending shadow jobs per worker; beyond it jobs are dropped
    shadow_mode: str = "process"  # process: a child process per worker; thread: in the worker
    shadow_nice: int = 10  # how much lower the shadow process's CPU priority is (0..19)
    shadow_sched: str = DEFAULT_SHADOW_SCHED  # the shadow process's CPU scheduling (SHADOW_SCHEDS)
    log_queue: int = 10_000  # pending prediction-log rows per worker; beyond it rows are dropped
    log_batch: int = 256  # rows per database write
    log_flush_s: float = 0.5  # longest a row waits before being written
    max_batch: int = 64  # rows (or texts) accepted in one /predict request
    max_text_chars: int = 10_000  # characters accepted in one text
    log_text_chars: int = 200  # characters of each text kept in the prediction log (0: none)
    max_new_tokens: int = 256  # the most tokens one /generate request may ask for
    retention_s: float = 7 * 24 * 3600.0  # prediction-log rows older than this are deleted
    retention_rows: int = 1_000_000  # and at most this many are kept
    ort_threads: int = 1  # intra-op threads per ONNX Runtime session (0: ORT decides)
    workers: int = 1  # BentoML worker processes
    admin_token: str = field(default="", repr=False)  # "" -> admin endpoints off

    def __post_init__(self) -> None:
        _check(bool(self.model), "model", self.model, "a registered model name")
        _check(0.0 <= self.shadow_sample <= 1.0, "shadow_sample", self.shadow_sample, "0..1")
        _check(self.poll_interval_s > 0, "poll_interval_s", self.poll_interval_s, "> 0 seconds")
        _check(self.log_flush_s > 0, "log_flush_s", self.log_flush_s, "> 0 seconds")
        _check(self.retention_s > 0, "retention_s", self.retention_s, "> 0 seconds")
        _check(self.ort_threads >= 0, "ort_threads", self.ort_threads, ">= 0")
        _check(self.shadow_mode in SHADOW_MODES, "shadow_mode", self.shadow_mode, "process, thread")
        _check(0 <= self.shadow_nice <= 19, "shadow_nice", self.shadow_nice, "0..19")
        _check(self.shadow_sched in SHADOW_SCHEDS, "shadow_sched", self.shadow_sched, "idle, nice")
        _check(
            self.shadow_sched != "idle" or hasattr(os, "SCHED_IDLE"),
            "shadow_sched",
            self.shadow_sched,
            "nice on this platform (idle needs Linux's SCHED_IDLE)",
        )
        _check(self.log_text_chars >= 0, "log_text_chars", self.log_text_chars, ">= 0")
        for name in (
            "shadow_queue",
            "log_queue",
            "log_batch",
            "max_batch",
            "max_text_chars",
            "max_new_tokens",
            "retention_rows",
            "workers",
        ):
            _check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")

    @property
    def resolved_db_url(self) -> str:
        """The database holding the registry and the prediction log."""
        return resolve_settings(self.db_url or None, home=self.home).db_url

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        """Build from ``PRUNEGUARD_*`` variables; a bad value names its variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(ENV[item.name])
            if raw is None or raw == "":
                continue
            values[item.name] = _parse(item.name, raw, _PARSERS.get(item.name, str))
        if "model" not in values:
            raise ConfigError(
                f"{ENV['model']} is not set; start the service with `pruneguard serve NAME`"
            )
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that :meth:`from_env` reads back into this config."""
        env: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value == "":
                continue
            env[ENV[item.name]] = str(value)
        return env


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} is {value!r}; allowed: {allowed} (env {ENV[name]})")


def _parse(name: str, raw: str, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{ENV[name]}={raw!r} is not a valid {parser.__name__}; fix or unset the variable"
        ) from exc


_PARSERS: dict[str, Callable[[str], Any]] = {
    "home": Path,
    "shadow_sample": float,
    "poll_interval_s": float,
    "log_flush_s": float,
    "retention_s": float,
    "shadow_queue": int,
    "shadow_nice": int,
    "log_queue": int,
    "log_batch": int,
    "max_batch": int,
    "max_text_chars": int,
    "log_text_chars": int,
    "max_new_tokens": int,
    "retention_rows": int,
    "ort_threads": int,
    "workers": int,
}
