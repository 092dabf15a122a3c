"""``pruneguard serve NAME``: run the BentoML service for one model.

The options become a :class:`deploy.config.ServeConfig`, passed to every BentoML worker
through ``PRUNEGUARD_*`` environment variables, then this process *becomes* ``bentoml serve
deploy.service:PruneguardService`` (exec), so signals reach BentoML directly. It is run
through :mod:`deploy.launch`, which gives this server a Prometheus multiprocess directory
of its own (servers sharing a BENTOML_HOME would otherwise empty each other's). Nothing
heavy is imported at module level.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from pruneguard import SOURCE_ROOT
from pruneguard.registry.cli import env_option

__all__ = ["build_command", "serve"]

SERVICE = "pruneguard.deploy.service:PruneguardService"
LAUNCHER = "pruneguard.deploy.launch"  # `python -m pruneguard.deploy.launch ARGS` = `bentoml ARGS`, private metrics dir


def build_command(config: object, *, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``bentoml serve`` for ``config``."""
    from pruneguard.deploy.config import ServeConfig
    from pruneguard.registry.settings import prepare_bentoml_env, resolve_settings

    assert isinstance(config, ServeConfig)
    env = dict(os.environ)
    env.update(config.to_env())
    settings = resolve_settings(config.db_url or None, home=config.home)
    env.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    prepare_bentoml_env(settings.bentoml_home)
    argv = [
        sys.executable,
        "-m",
        LAUNCHER,
        "serve",
        SERVICE,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(SOURCE_ROOT),
    ]
    return argv, env


def _check_model(config: object) -> None:
    """Fail fast (one line) when the registry is unreachable or lacks the model."""
    from pruneguard.deploy.config import ServeConfig
    from pruneguard.registry import PruneguardError, open_registry

    assert isinstance(config, ServeConfig)
    try:
        with open_registry(config.db_url or None, home=config.home) as registry:
            aliases = registry.aliases(config.model)
    except PruneguardError as exc:
        raise click.ClickException(str(exc)) from exc
    if "champion" not in aliases:
        click.echo(
            f"warning: {config.model!r} has no champion yet; the service stays not ready "
            "(/readyz 503) until one is promoted",
            err=True,
        )


# flag, type, environment variable, help. No click default: an unset option leaves the value to
# ServeConfig.from_env, whose default the help names.
_KNOBS: tuple[tuple[str, Any, str, str], ...] = (
    ("--shadow-sample", float, "PRUNEGUARD_SHADOW_SAMPLE",
     "Fraction of requests mirrored to the shadow (0..1). [default: 1.0]"),
    ("--db-url", str, "PRUNEGUARD_DB_URL",
     "Registry/prediction-log database URL. [default: SQLite under --home]"),
    ("--home", click.Path(path_type=Path), "PRUNEGUARD_HOME",
     "pruneguard home (registry.db, BentoML store). [default: ./.pruneguard]"),
    ("--poll-interval", float, "PRUNEGUARD_POLL_INTERVAL",
     "Seconds between registry revision checks. [default: 2.0]"),
    ("--workers", int, "PRUNEGUARD_SERVE_WORKERS", "BentoML worker processes. [default: 1]"),
    ("--max-batch", int, "PRUNEGUARD_MAX_BATCH",
     "Most rows (or texts) accepted per /predict request. [default: 64]"),
    ("--max-text-chars", int, "PRUNEGUARD_MAX_TEXT_CHARS",
     "Most characters accepted in one text. [default: 10000]"),
    ("--log-text-chars", int, "PRUNEGUARD_LOG_TEXT_CHARS",
     "Characters of each text kept in the prediction log; 0 keeps none. [default: 200]"),
    ("--max-new-tokens", int, "PRUNEGUARD_MAX_NEW_TOKENS",
     "Most tokens one /generate request may ask for (causal-lm). [default: 256]"),
)  # fmt: skip


def _knobs(command: Any) -> Any:
    for flag, kind, env, text in reversed(_KNOBS):
        command = env_option(flag, env, text, type=kind, default=None)(command)
    return command


@click.command()
@click.argument("name")
@env_option("--host", "BENTOML_HOST", "Address to listen on; loopback unless told otherwise.",
            default="127.0.0.1", show_default=True)  # fmt: skip
@env_option(
    "--port", "BENTOML_PORT", "Port to listen on.", default=3000, show_default=True, type=int
)
@_knobs
@click.option(
    "--admin-token-env",
    default=None,
    metavar="VAR",
    help="Enable /admin/promote and /admin/rollback with the bearer token in $VAR.",
)
def serve(name: str, host: str, port: int, admin_token_env: str | None, **options: object) -> None:
    """Serve NAME's champion, with its shadow compared off the response path."""
    from pruneguard.deploy.config import ENV, ServeConfig
    from pruneguard.registry.errors import ConfigError
    from pruneguard.registry.settings import default_home, mask_url

    values = {key: value for key, value in options.items() if value is not None}
    rename = {"poll_interval": "poll_interval_s"}
    values = {rename.get(key, key): value for key, value in values.items()}
    values["home"] = Path(values.get("home") or default_home()).absolute()  # type: ignore[arg-type]
    if admin_token_env:
        token = os.environ.get(admin_token_env, "")
        if not token:
            raise click.BadParameter(
                f"${admin_token_env} is empty or unset", param_hint="--admin-token-env"
            )
        values["admin_token"] = token
    try:
        # The knobs without an option (PRUNEGUARD_SHADOW_QUEUE, ...) come from the environment.
        config = replace(ServeConfig.from_env({**os.environ, ENV["model"]: name}), **values)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    _check_model(config)
    argv, env = build_command(config, host=host, port=port)
    click.echo(
        f"serving {name} on http://{host}:{port} (registry {mask_url(config.resolved_db_url)})",
        err=True,
    )
    os.execve(argv[0], argv, env)
