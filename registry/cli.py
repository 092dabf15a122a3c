"""``pruneguard models``: the registry from the command line.

Every command prints a readable table by default and JSON with ``--json``; errors are one
line (a :class:`click.ClickException`) and a non-zero exit. Nothing heavy is imported here:
BentoML loads only when a command touches the store.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pruneguard.registry.artifact import KINDS
from pruneguard.registry.errors import PruneguardError

if TYPE_CHECKING:
    from pruneguard.registry.records import Event, Version
    from pruneguard.registry.registry import Registry

__all__ = ["env_option", "models"]


def env_option(flag: str, envvar: str, text: str, *names: str, **kwargs: Any) -> Any:
    """A ``click.option`` that falls back to ``envvar``; ``--help`` names the variable."""
    return click.option(flag, *names, envvar=envvar, show_envvar=True, help=text, **kwargs)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}"


class _Group(click.Group):
    """Turns pruneguard's errors into one-line ClickExceptions, and closes the registry."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PruneguardError as exc:
            raise click.ClickException(str(exc)) from exc


class _Lazy:
    """Opens the registry on first use, from the group's options."""

    def __init__(self) -> None:
        self.db_url: str | None = None  # None: $PRUNEGUARD_DB_URL, then the SQLite default
        self.home: Path | None = None  # None: $PRUNEGUARD_HOME, then ./.pruneguard
        self._registry: Registry | None = None

    def get(self) -> Registry:
        if self._registry is None:
            from pruneguard.registry.registry import open_registry

            self._registry = open_registry(self.db_url, home=self.home)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


def _set_db_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(_Lazy).db_url = value


def _set_home(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(_Lazy).home = value


def db_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db-url`` and ``--home``, accepted on the group and on every command."""
    func = click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=_set_home,
        help="pruneguard home [env PRUNEGUARD_HOME; default ./.pruneguard].",
    )(func)
    return click.option(
        "--db-url",
        expose_value=False,
        callback=_set_db_url,
        help="Registry database URL [env PRUNEGUARD_DB_URL; default "
        "sqlite:///$PRUNEGUARD_HOME/registry.db]; PostgreSQL: postgresql+psycopg://USER:PASS@HOST/DB.",
    )(func)


@click.group(cls=_Group)
@db_options
@click.pass_context
def models(ctx: click.Context) -> None:
    """Registered versions: list, promote, rollback, history.

    \b
    Examples:
      pruneguard models list
      pruneguard models promote digits-cnn:3f2a... --reason "beats champion"
      pruneguard models rollback digits-cnn --reason "accuracy fell"
      pruneguard models history digits-cnn
    """
    ctx.call_on_close(ctx.ensure_object(_Lazy).close)


def _registry() -> Registry:
    lazy = click.get_current_context().find_object(_Lazy)
    assert lazy is not None
    return lazy.get()


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
actor_option = click.option(
    "--actor", default=default_actor, show_default="cli:$USER", help="Who does this."
)
reason_option = click.option("--reason", default="", help="Why (kept in the history).")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _versions_table(versions: Sequence[Version]) -> str:
    rows = [
        (
            v.tag,
            v.kind,
            v.labels.get("method", ""),
            _fmt(v.manifest.get("metrics", {}).get("accuracy")),
            ",".join(v.aliases),
            v.created_at[:19].replace("T", " "),
        )
        for v in versions
    ]
    return _table(("TAG", "KIND", "METHOD", "ACCURACY", "ALIASES", "CREATED (UTC)"), rows)


def _events_table(events: Sequence[Event]) -> str:
    rows = [
        (
            e.id,
            e.ts[:19].replace("T", " "),
            e.actor,
            e.action,
            e.model,
            e.alias or "",
            f"{e.from_version or '-'} -> {e.to_version or '-'}",
            e.reason,
        )
        for e in events
    ]
    return _table(("ID", "TIME (UTC)", "ACTOR", "ACTION", "MODEL", "ALIAS", "MOVE", "REASON"), rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _accuracy(value: float | None, delta: float | None) -> str:
    """``0.9806 (−0.27)``: the accuracy and its change from the parent in points."""
    if value is None:
        return ""
    if delta is None:
        return f"{value:.4f}"
    points = delta * 100
    return f"{value:.4f} ({'−' if points < 0 else '+'}{abs(points):.2f})"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def _speedups(by_batch: dict[str, float] | None) -> str:
    """``1.46× (1) / 2.08× (8)``, in batch-size order."""
    if not by_batch:
        return ""
    ordered = sorted(by_batch.items(), key=lambda kv: int(kv[0]))
    return " / ".join(f"{value:.2f}× ({batch})" for batch, value in ordered)


def _parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _emit(as_json: bool, data: Any, text: Callable[[], str]) -> None:
    if as_json:
        _echo_json(data)
    else:
        click.echo(text())


@models.command("list")
@db_options
@click.argument("name", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option(
    "--label",
    "label_filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only versions with this label (repeatable).",
)
@json_option
def list_cmd(
    name: str | None, kind: str | None, label_filters: tuple[str, ...], as_json: bool
) -> None:
    """List registered versions (all models, or NAME), with their aliases.

    \b
    Example:
      pruneguard models list digits-cnn --kind pruned --label method=channel
    """
    found = _registry().list(name, kind=kind, labels=_parse_labels(label_filters))
    _emit(as_json, [v.to_dict() for v in found], lambda: _versions_table(found))


@models.command()
@db_options
@click.argument("tag")
@json_option
def show(tag: str, as_json: bool) -> None:
    """Show one version: labels, aliases, parent and its manifest.

    \b
    Example:
      pruneguard models show digits-cnn:3f2a9c0d1e2b4a5f
    """
    version = _registry().get(tag)

    def text() -> str:
        metrics = version.manifest.get("metrics", {})
        lines = [
            f"tag:        {version.tag}",
            f"kind:       {version.kind}",
            f"aliases:    {', '.join(version.aliases) or '-'}",
            f"parent:     {version.parent_tag or '-'}",
            f"labels:     {', '.join(f'{k}={v}' for k, v in sorted(version.labels.items()))}",
            f"created_at: {version.created_at}",
            f"model sha:  {version.model_sha256}",
        ]
        lines += [f"  {k}: {json.dumps(metrics[k])}" for k in sorted(metrics)]
        return "\n".join(lines)

    _emit(as_json, version.to_dict(), text)


@models.command()
@db_options
@click.argument("tag")
@json_option
def lineage(tag: str, as_json: bool) -> None:
    """Show the dense -> pruned chain of TAG with metric changes from each parent.

    \b
    Example:
      pruneguard models lineage digits-cnn:3f2a9c0d1e2b4a5f
    """
    chain = _registry().lineage(tag)

    def row(entry: dict[str, Any]) -> tuple[Any, ...]:
        delta, metrics = entry["delta"] or {}, entry["metrics"]
        return (
            entry["tag"],
            entry["kind"],
            entry["parent"] or "-",
            _accuracy(metrics["accuracy"], delta.get("accuracy")),
            _ratio(delta.get("params_ratio")),
            _ratio(delta.get("macs_ratio")),
            _speedups(metrics["speedup"]),
        )

    headers = (
        "TAG",
        "KIND",
        "PARENT",
        "ACCURACY (Δ points)",
        "PARAMS",
        "MACS",
        "SPEEDUP (batch size)",
    )
    _emit(as_json, chain, lambda: _table(headers, [row(e) for e in chain]))


@models.command()
@db_options
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--parent", "parent_tag", help="Tag of the dense version this was pruned from.")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra label (repeatable)."
)
@click.option(
    "--alias",
    "set_aliases",
    multiple=True,
    type=click.Choice(["champion", "shadow", "baseline"]),
    help="Point this alias at the new version (repeatable).",
)
@actor_option
@reason_option
@json_option
def register(
    artifact_dir: Path,
    parent_tag: str | None,
    labels: tuple[str, ...],
    set_aliases: tuple[str, ...],
    actor: str,
    reason: str,
    as_json: bool,
) -> None:
    """Register an artifact directory (sha256-checked) as a new version.

    Registering the same model.onnx again returns the existing version.

    \b
    Example:
      pruneguard models register out/pruned --parent digits-cnn:1a2b3c4d5e6f7a8b --alias champion
    """
    reg = _registry()
    version = reg.register(
        artifact_dir, actor=actor, parent_tag=parent_tag, labels=_parse_labels(labels)
    )
    for alias in set_aliases:
        if alias not in version.aliases:
            reg.set_alias(version.name, alias, version.tag, actor=actor, reason=reason)
    version = reg.get(version.tag)
    _emit(
        as_json, version.to_dict(), lambda: f"registered {version.tag}" + _aliases_suffix(version)
    )


def _aliases_suffix(version: Version) -> str:
    return f" ({', '.join(version.aliases)})" if version.aliases else ""


@models.command()
@db_options
@click.argument("tag")
@click.option("--shadow-previous", is_flag=True, help="Make the previous champion the shadow.")
@actor_option
@reason_option
@json_option
def promote(tag: str, shadow_previous: bool, actor: str, reason: str, as_json: bool) -> None:
    """Make TAG the champion of its model (sha256-checked first).

    Promoting the current champion changes nothing, records nothing and succeeds.

    \b
    Example:
      pruneguard models promote digits-cnn:3f2a9c0d1e2b4a5f --shadow-previous --reason "review ok"
    """
    registry = _registry()
    name = tag.split(":", 1)[0]
    if registry.aliases(name).get("champion") == tag:
        unchanged = {"model": name, "alias": "champion", "to_version": tag, "changed": False}
        _emit(as_json, unchanged, lambda: f"{tag} is already champion of {name}; nothing changed")
        return
    event = registry.promote(tag, actor=actor, reason=reason, shadow_previous=shadow_previous)
    _emit(as_json, {**event.to_dict(), "changed": True}, lambda: _move_line(event))


def _move_line(event: Event) -> str:
    return f"{event.model} {event.alias}: {event.from_version or '-'} -> {event.to_version} ({event.action} by {event.actor})"


@models.command()
@db_options
@click.argument("name")
@click.option("--to", "to_tag", help="Roll back to this version instead of the previous champion.")
@actor_option
@reason_option
@json_option
def rollback(name: str, to_tag: str | None, actor: str, reason: str, as_json: bool) -> None:
    """Move NAME's champion back to the version that served before (or --to TAG).

    Refuses a version whose files fail their sha256 check.

    \b
    Examples:
      pruneguard models rollback digits-cnn --reason "accuracy fell after deploy"
      pruneguard models rollback digits-cnn --to digits-cnn:1a2b3c4d5e6f7a8b --reason "known good"
    """
    event = _registry().rollback(name, actor=actor, reason=reason, to=to_tag)
    _emit(as_json, event.to_dict(), lambda: _move_line(event))


@models.command()
@db_options
@click.argument("name", required=False)
@click.option("--all", "all_models", is_flag=True, help="History of every model.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N events.")
@json_option
def history(name: str | None, all_models: bool, limit: int | None, as_json: bool) -> None:
    """Show who moved what, when and why (oldest first).

    \b
    Examples:
      pruneguard models history digits-cnn
      pruneguard models history --all --limit 20 --json
    """
    if (name is None) == (not all_models):
        raise click.UsageError("give a model NAME or --all (not both)")
    events = _registry().history(None if all_models else name, limit=limit)
    _emit(as_json, [e.to_dict() for e in events], lambda: _events_table(events))


@models.command()
@db_options
@click.argument("target", required=False)
@json_option
def verify(target: str | None, as_json: bool) -> None:
    """Check the sha256 of every file of a version (TAG), a model (NAME), or everything.

    Exits non-zero and names the file when one fails.

    \b
    Examples:
      pruneguard models verify
      pruneguard models verify digits-cnn:3f2a9c0d1e2b4a5f
    """
    reg = _registry()
    if target is not None and ":" in target:
        results = [_verify_one(reg, target)]
    else:
        results = reg.verify_all(target)
    rows = [(r["tag"], "ok" if r["ok"] else r["error"]) for r in results]
    _emit(as_json, results, lambda: _table(("TAG", "STATUS"), rows))
    failed = [r for r in results if not r["ok"]]
    if failed:
        raise click.ClickException(
            f"{len(failed)} version(s) failed verification: {failed[0]['error']}"
        )


def _verify_one(reg: Registry, tag: str) -> dict[str, Any]:
    from pruneguard.registry.errors import ArtifactCorrupt

    try:
        return reg.verify(tag)
    except ArtifactCorrupt as exc:
        return {"tag": tag, "ok": False, "error": str(exc), "file": exc.path}


@models.command()
@db_options
@click.argument("name")
@json_option
def aliases(name: str, as_json: bool) -> None:
    """Show where champion, shadow and baseline of NAME point, and the revision counter.

    \b
    Example:
      pruneguard models aliases digits-cnn
    """
    reg = _registry()
    current = reg.aliases(name)
    data = {"model": name, "aliases": current, "revision": reg.revision()}
    _emit(as_json, data, lambda: _table(("ALIAS", "TAG"), sorted(current.items())))


@models.command("export")
@db_options
@click.argument("tag")
@click.argument("dest", type=click.Path(path_type=Path))
@json_option
def export_cmd(tag: str, dest: Path, as_json: bool) -> None:
    """Write TAG as a .bentomodel archive (DEST: a file or a directory) to move it elsewhere.

    \b
    Example:
      pruneguard models export digits-cnn:3f2a9c0d1e2b4a5f /mnt/share/
    """
    out = _registry().export(tag, dest)
    _emit(as_json, {"tag": tag, "path": str(out)}, lambda: f"exported {tag} to {out}")


@models.command("import")
@db_options
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@actor_option
@json_option
def import_cmd(archive: Path, actor: str, as_json: bool) -> None:
    """Import a .bentomodel archive written by `pruneguard models export` (sha256-checked).

    \b
    Example:
      pruneguard models import /mnt/share/digits-cnn-3f2a9c0d1e2b4a5f.bentomodel
    """
    version = _registry().import_archive(archive, actor=actor)
    _emit(as_json, version.to_dict(), lambda: f"imported {version.tag}")


@models.command()
@db_options
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option(
    "--grace",
    "grace_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Keep store entries without a database row younger than this many seconds (a registration in flight).",
)
@json_option
def gc(dry_run: bool, grace_s: float, as_json: bool) -> None:
    """Remove versions no alias or rollback path refers to, and orphaned store entries.

    Never removes a version an alias points at, one a rollback could return to, or a parent
    of those.

    \b
    Example:
      pruneguard models gc --dry-run
    """
    result = _registry().gc(dry_run=dry_run, grace_s=grace_s)
    verb = "would remove" if dry_run else "removed"

    def text() -> str:
        gone = result["removed"] + result["orphans"]
        return f"{verb} {len(gone)} version(s)" + "".join(f"\n  {tag}" for tag in gone)

    _emit(as_json, result, text)
