"""The `pruneguard` command: one click group assembled from each package's ``cli.py``.

Subcommands are imported only when they run (or when their help is shown), so
``pruneguard --help`` never pays for torch, bentoml or evidently.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "prune": (
        "pruneguard.pruning.cli:prune",
        "Prune a model from a recipe into dense/ and pruned/ artifacts.",
    ),
    "bench": ("pruneguard.pruning.cli:bench", "Compare ONNX Runtime latency of two ONNX files."),
    "models": (
        "pruneguard.registry.cli:models",
        "Registered versions: list, promote, rollback, history.",
    ),
    "serve": ("pruneguard.deploy.cli:serve", "Serve a model's champion with its shadow (BentoML)."),
    "agent": ("pruneguard.agent.cli:agent", "Watch traffic, report drift and accuracy, roll back."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand not built yet in this install
            raise click.ClickException(f"'{cmd_name}' is unavailable: {exc}") from exc
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from COMMANDS so that --help imports nothing.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pruneguard")
def main() -> None:
    """pruneguard: prune models, register versions, serve with a dense shadow, roll back.

    \b
    The loop:
      pruneguard prune RECIPE --out DIR --register   prune and register dense + pruned
      pruneguard models list                          what is registered, and the aliases
      pruneguard serve NAME                           champion answers, dense shadow compares
      pruneguard agent run                            drift + accuracy checks, automatic rollback
      pruneguard models rollback NAME --reason ...    roll back by hand
    """
