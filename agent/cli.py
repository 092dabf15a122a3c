"""``pruneguard agent``: run the monitoring loop, run one tick, write a report.

Heavy modules (pandas, evidently, the registry's SQLAlchemy/BentoML parts) load inside the
commands, so ``pruneguard agent --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pruneguard.registry.cli import env_option

if TYPE_CHECKING:
    from pruneguard.agent.loop import Agent

__all__ = ["agent"]


# Every knob: flag, type, default, environment variable, help. Shared by run, once and report.
_TUNING: tuple[tuple[str, Any, Any, str, str], ...] = (
    ("--window", float, 600.0, "PRUNEGUARD_AGENT_WINDOW", "Seconds of traffic each tick analyses."),
    ("--threshold", int, 3, "PRUNEGUARD_AGENT_THRESHOLD",
     "Consecutive failing ticks before a rollback."),
    ("--cooldown", float, 600.0, "PRUNEGUARD_AGENT_COOLDOWN",
     "Seconds after a rollback in which nothing is counted."),
    ("--min-samples", int, 300, "PRUNEGUARD_AGENT_MIN_SAMPLES",
     "Labelled pairs (accuracy) and pairs (agreement) a window needs to be conclusive."),
)  # fmt: skip


def _options(command: Any) -> Any:
    decorators = [
        env_option("--db-url", "PRUNEGUARD_DB_URL", "Registry / prediction log database URL."),
        env_option(
            "--home",
            "PRUNEGUARD_HOME",
            "pruneguard home (reports go under it).",
            type=click.Path(path_type=Path),
        ),
        *(
            env_option(flag, env, text, type=kind, default=default, show_default=True)
            for flag, kind, default, env, text in _TUNING
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _build(
    ctx_params: dict[str, Any],
    *,
    interval: float = 30.0,
    report_every: float = 300.0,
    report_on_rollback: bool = True,
    shutdown_grace: float = 10.0,
) -> Agent:
    from pruneguard.agent.loop import Agent, AgentConfig, replace_config
    from pruneguard.registry import PruneguardError, open_registry

    try:
        config = replace_config(
            AgentConfig(),
            interval_s=interval,
            window_s=ctx_params["window"],
            report_every_s=report_every,
            report_on_rollback=report_on_rollback,
            shutdown_grace_s=shutdown_grace,
            threshold=ctx_params["threshold"],
            cooldown_s=ctx_params["cooldown"],
            min_labelled_pairs=ctx_params["min_samples"],
            min_pairs=ctx_params["min_samples"],
        )
        registry = open_registry(ctx_params["db_url"], home=ctx_params["home"])
    except PruneguardError as exc:
        raise click.ClickException(str(exc)) from exc
    return Agent(registry, config=config)


@click.group()
def agent() -> None:
    """Watch traffic, report drift and accuracy, roll back a failing champion."""


@agent.command()
@env_option(
    "--model", "PRUNEGUARD_AGENT_MODELS",
    "Model to watch (repeat; default: every model with a champion).", "models", multiple=True,
)  # fmt: skip
@env_option("--interval", "PRUNEGUARD_AGENT_INTERVAL", "Seconds between ticks.",
            type=float, default=30.0, show_default=True)  # fmt: skip
@env_option("--report-every", "PRUNEGUARD_AGENT_REPORT_EVERY",
            "Seconds between saved Evidently reports.",
            type=float, default=300.0, show_default=True)  # fmt: skip
@env_option(
    "--report-on-rollback/--no-report-on-rollback", "PRUNEGUARD_AGENT_REPORT_ON_ROLLBACK",
    "Write an Evidently report (seconds of work) right after each rollback.",
    default=True, show_default=True,
)  # fmt: skip
@env_option("--shutdown-grace", "PRUNEGUARD_AGENT_SHUTDOWN_GRACE",
            "Seconds shutdown waits for a report being written (then abandons it).",
            type=float, default=10.0, show_default=True)  # fmt: skip
@env_option("--host", "PRUNEGUARD_AGENT_HOST", "Address of /metrics, /reports, /alerts.",
            default="127.0.0.1", show_default=True)  # fmt: skip
@env_option("--port", "PRUNEGUARD_AGENT_PORT",
            "Port of /metrics, /reports, /alerts (0: any free one).",
            type=int, default=3001, show_default=True)  # fmt: skip
@env_option("--alert-token", "PRUNEGUARD_AGENT_ALERT_TOKEN",
            "Bearer token that turns on POST /alerts.")  # fmt: skip
@_options
def run(
    models: tuple[str, ...],
    interval: float,
    report_every: float,
    report_on_rollback: bool,
    shutdown_grace: float,
    host: str,
    port: int,
    alert_token: str | None,
    **params: Any,
) -> None:
    """Tick every --interval seconds until SIGINT/SIGTERM; serve /metrics meanwhile."""
    from pruneguard.agent.server import AgentServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    watcher = _build(
        params,
        interval=interval,
        report_every=report_every,
        report_on_rollback=report_on_rollback,
        shutdown_grace=shutdown_grace,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = AgentServer(watcher, host=host, port=port, token=alert_token).start()
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc}); pick another --port"
        ) from exc
    click.echo(f"agent {watcher.actor} serving http://{host}:{server.port}/metrics", err=True)
    try:
        watcher.run(list(models) or None, stop)
    finally:
        server.stop()
        if not watcher.close():
            click.echo(
                f"a report was still being written after {shutdown_grace} s; abandoned", err=True
            )
        watcher.registry.close()


@agent.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the checks and decision as JSON.")
@click.option(
    "--report/--no-report", default=False, show_default=True, help="Also write an Evidently report."
)
@_options
def once(name: str, as_json: bool, report: bool, **params: Any) -> None:
    """Run one tick on NAME: checks, decision (and the rollback, if it decides one)."""
    watcher = _build(params)
    try:
        result = watcher.tick(name, report=report)
    finally:
        watcher.close()
        watcher.registry.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    for check in result.analysis.checks:
        click.echo(f"{check.name:14} {check.outcome:13} n={check.samples:<6} {check.reason}")
    click.echo(
        f"decision: {result.decision.action} ({result.decision.reason}); phase {result.state.phase.value}"
    )


@agent.command()
@click.argument("name")
@_options
def report(name: str, **params: Any) -> None:
    """Analyse NAME's last window and write its report now (no decision is taken, nothing is
    rolled back); print the report's directory."""
    from pruneguard.registry import PruneguardError

    watcher = _build(params)
    try:
        path = watcher.report(name)
    except PruneguardError as exc:
        raise click.ClickException(f"no report written for {name!r}: {exc}") from exc
    finally:
        watcher.close()
        watcher.registry.close()
    click.echo(str(path))
    sys.stdout.flush()
