"""The :class:`Registry`: versions in the BentoML store, movable aliases and their history.

The database row of a version is the commit point of a registration: the files go into the
store first (one atomic rename), then one transaction inserts the row and its event. Every
alias move is a compare-and-set inside one transaction that also appends an event and bumps
the revision counter; a failing operation changes nothing.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pruneguard.registry import cleanup, db, leases
from pruneguard.registry import queries as q
from pruneguard.registry.artifact import MODEL, read_manifest
from pruneguard.registry.artifact import verify as verify_artifact
from pruneguard.registry.errors import ArtifactCorrupt, ConfigError, Conflict, NotFound
from pruneguard.registry.history import lineage_entry, previous_champion
from pruneguard.registry.moves import UNCHECKED, Move, apply_move, first_moves, mismatch
from pruneguard.registry.records import (
    Event,
    Version,
    now_iso,
    split_tag,
    unknown_tag,
    validate_alias,
    validate_name,
)
from pruneguard.registry.settings import Settings, resolve_settings
from pruneguard.registry.store import ModelStore

__all__ = ["UNCHECKED", "Registry", "open_registry"]


DEFAULT_RUN_ALIASES = {"champion": "pruned", "shadow": "dense", "baseline": "dense"}
NOTE_ACTIONS = ("accepted", "refused")  # verdicts recorded by Registry.record


def open_registry(url: str | None = None, *, home: Path | None = None) -> Registry:
    """Open (and create if needed) the registry at ``url`` / ``home``. See :mod:`registry.settings`."""
    settings = resolve_settings(url, home=home)
    engine = db.connect(settings.db_url)
    store = ModelStore(settings.bentoml_home)
    store.sweep_staging()
    return Registry(settings, engine, store)


class Registry:
    """Registered versions, aliases (champion/shadow/baseline), history, locks."""

    def __init__(self, settings: Settings, engine: Engine, store: ModelStore) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store

    @property
    def url(self) -> str:
        return self.settings.db_url

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- registering ----------------------------------------------------------------------
    def register(
        self,
        artifact_dir: str | os.PathLike[str],
        *,
        actor: str,
        parent_tag: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Version:
        """Store an artifact as a new version (or return the version already holding the same
        ``model.onnx`` under this name). Files are sha256-checked first."""
        artifact_dir = Path(artifact_dir)
        manifest = verify_artifact(artifact_dir)
        name = validate_name(str(manifest["name"]))
        model_sha = manifest["files"][MODEL]
        parent = self._resolve_parent(manifest, parent_tag)
        existing = self._find_by_sha(name, model_sha)
        if existing is not None:
            return existing
        tag = f"{name}:{model_sha[:16]}"
        all_labels = _labels(manifest, parent, labels)
        self.store.add(artifact_dir, tag, labels=all_labels, manifest=manifest)
        self._check_store_entry(tag, model_sha)
        return self._insert_version(tag, manifest, all_labels, parent, actor, action="register")

    def register_run(
        self,
        dense_dir: str | os.PathLike[str],
        pruned_dir: str | os.PathLike[str],
        *,
        actor: str,
        set_aliases: bool = True,
        aliases: Mapping[str, str] | None = None,
        reason: str = "first prune run registered",
        quantized_dir: str | os.PathLike[str] | None = None,
    ) -> tuple[Version, ...]:
        """Register a prune run: dense, then pruned with dense as its parent, then (when given)
        the int8 ``quantized`` version with pruned as its parent. Returns them in that order.

        For the first pruned version of a model (no champion yet) the aliases are set from
        ``aliases`` (alias -> "dense" | "pruned" | "quantized"; default champion=pruned,
        shadow=baseline=dense), with ``reason`` in their events.
        """
        dirs = {"dense": dense_dir, "pruned": pruned_dir}
        if quantized_dir is not None:
            dirs["quantized"] = quantized_dir
        plan = {
            validate_alias(a): _run_kind(k, dirs)
            for a, k in (aliases or DEFAULT_RUN_ALIASES).items()
        }
        names = {kind: read_manifest(d)["name"] for kind, d in dirs.items()}
        if len(set(names.values())) != 1:
            raise ConfigError(
                f"the run's artifacts name different models ({names}); a prune run must write "
                "them all under the recipe's name"
            )
        by_kind: dict[str, str] = {}
        parent = None
        for kind, folder in dirs.items():
            by_kind[kind] = self.register(folder, actor=actor, parent_tag=parent).tag
            parent = by_kind[kind]
        if set_aliases:
            moves = {alias: by_kind[kind] for alias, kind in plan.items()}
            self._first_aliases(names["dense"], moves, actor=actor, reason=reason)
        return tuple(self.get(tag) for tag in by_kind.values())

    def record(
        self,
        tag: str,
        *,
        action: str,
        actor: str,
        reason: str = "",
        evidence: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append a verdict about ``tag`` to the history without moving an alias (``action``:
        one of NOTE_ACTIONS, e.g. the acceptance gate's ``refused``)."""
        if action not in NOTE_ACTIONS:
            raise ConfigError(f"action {action!r}: a note is one of {', '.join(NOTE_ACTIONS)}")
        name, _ = split_tag(tag)
        self.get(tag)  # NotFound for an unregistered tag
        with db.translate_errors(self.url), db.write_tx(self.engine) as conn:
            return q.append_event(
                conn, actor=actor, action=action, model=name, to_version=tag, reason=reason,
                evidence=evidence,
            )  # fmt: skip

    def import_archive(self, archive: str | os.PathLike[str], *, actor: str) -> Version:
        """Import a ``.bentomodel`` written by :meth:`export` (another machine's version)."""
        tag = self.store.import_file(Path(archive), _check_imported)
        manifest = verify_artifact(self.store.path_of(tag))
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            row = q.version_row(conn, tag)
        if row is not None:
            return self.get(tag)
        parent = self._resolve_parent(manifest, None, strict=False)
        all_labels = _labels(manifest, parent, None)
        return self._insert_version(tag, manifest, all_labels, parent, actor, action="import")

    def export(self, tag: str, dest: str | os.PathLike[str]) -> Path:
        """Write ``tag`` (sha256-checked) as a ``.bentomodel`` archive; returns its path."""
        self.path(tag, verify=True)
        return self.store.export(tag, Path(dest))

    # --- reading --------------------------------------------------------------------------
    def list(
        self,
        name: str | None = None,
        *,
        kind: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Version]:
        """Versions with a database row and a complete store entry, oldest first."""
        query = sa.select(db.versions)
        if name is not None:
            query = query.where(db.versions.c.name == name)
        if kind is not None:
            query = query.where(db.versions.c.kind == kind)
        query = query.order_by(db.versions.c.created_at, db.versions.c.tag)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
            alias_map = q.alias_map(conn)
        wanted = dict(labels or {})
        return [
            Version.from_row(row, tuple(alias_map.get(row["tag"], ())))
            for row in rows
            if self.store.is_complete(row["tag"])
            and all(row["labels"].get(k) == v for k, v in wanted.items())
        ]

    def models(self) -> builtins.list[str]:
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            query = sa.select(db.versions.c.name).distinct().order_by(db.versions.c.name)
            return list(conn.execute(query).scalars())

    def get(self, tag: str) -> Version:
        """The version ``tag``; :class:`NotFound` when it is not registered."""
        split_tag(tag)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            row = q.version_row(conn, tag)
            alias_map = q.alias_map(conn, tag)
        if row is None or not self.store.is_complete(tag):
            raise NotFound(unknown_tag(tag))
        return Version.from_row(row, tuple(alias_map.get(tag, ())))

    def path(self, tag: str, *, verify: bool = True) -> Path:
        """The artifact directory of ``tag`` in the store; sha256-checked unless ``verify=False``."""
        version = self.get(tag)
        path = self.store.path_of(tag)
        if verify:
            self._verify_files(version, path)
        return path

    def verify(self, tag: str) -> dict[str, Any]:
        """Check every file of ``tag`` against its sha256; :class:`ArtifactCorrupt` names the file."""
        version = self.get(tag)
        path = self.store.path_of(tag)
        manifest = self._verify_files(version, path)
        return {"tag": tag, "ok": True, "path": str(path), "files": dict(manifest["files"])}

    def verify_all(self, name: str | None = None) -> builtins.list[dict[str, Any]]:
        """:meth:`verify` every listed version; failures are reported, not raised."""
        if name is not None:
            self._require_model(name)
        results = []
        for version in self.list(name):
            try:
                results.append(self.verify(version.tag))
            except ArtifactCorrupt as exc:
                results.append(
                    {"tag": version.tag, "ok": False, "error": str(exc), "file": exc.path}
                )
        return results

    def aliases(self, name: str) -> dict[str, str]:
        """``{"champion": tag, ...}`` for model ``name`` (only the aliases that are set)."""
        query = sa.select(db.aliases.c.alias, db.aliases.c.tag).where(db.aliases.c.name == name)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            found = {row.alias: row.tag for row in conn.execute(query)}
        if not found:
            self._require_model(name)
        return found

    def resolve(self, name: str, alias: str) -> str:
        """The tag ``alias`` of ``name`` points at; :class:`NotFound` when unset."""
        validate_alias(alias)
        current = self.aliases(name).get(alias)
        if current is None:
            raise NotFound(
                f"model {name!r} has no {alias}; set one with `pruneguard models promote TAG` "
                "or `pruneguard models register --alias`"
            )
        return current

    def revision(self) -> int:
        """A counter bumped by every alias move (poll it to notice a move)."""
        query = sa.select(db.revision.c.value).where(db.revision.c.id == 1)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            return int(conn.execute(query).scalar_one())

    def history(self, name: str | None = None, *, limit: int | None = None) -> builtins.list[Event]:
        """Events, oldest first (the last ``limit`` when given); one model or all.

        A model keeps its history after ``gc`` removed its versions."""
        query = sa.select(db.events).order_by(db.events.c.id.desc())
        if name is not None:
            query = query.where(db.events.c.model == name)
        if limit is not None:
            query = query.limit(limit)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
        if name is not None and not rows:
            self._require_model(name)
        return [Event.from_row(row) for row in reversed(rows)]

    def lineage(self, tag: str) -> builtins.list[dict[str, Any]]:
        """The chain root (dense) → ... → ``tag``, then ``tag``'s children, with metric deltas."""
        chain = [self.get(tag)]
        while chain[0].parent_tag is not None and len(chain) < 64:
            try:
                chain.insert(0, self.get(chain[0].parent_tag))
            except NotFound:
                break
        children = [v for v in self.list(chain[-1].name) if v.parent_tag == tag]
        entries = []
        for version in chain + children:
            parent = next((p for p in chain if p.tag == version.parent_tag), None)
            link = (parent.tag, parent.manifest) if parent is not None else None
            entries.append(lineage_entry(version.tag, version.kind, version.manifest, link))
        return entries

    # --- moving aliases -------------------------------------------------------------------
    def set_alias(
        self,
        name: str,
        alias: str,
        tag: str,
        *,
        actor: str,
        reason: str = "",
        evidence: Mapping[str, Any] | None = None,
        expected: str | None = UNCHECKED,
        action: str = "set_alias",
    ) -> Event:
        """Point ``alias`` of ``name`` at ``tag`` (compare-and-set when ``expected`` is given:
        :class:`Conflict` unless the alias currently points at ``expected``)."""
        validate_alias(alias)
        self._check_same_model(name, tag)
        move = Move(name, alias, tag, actor, action, reason, evidence, expected)
        return self._apply([move.checked(self._verified_sha(tag))])[0]

    def promote(
        self,
        tag: str,
        *,
        actor: str,
        reason: str = "",
        shadow_previous: bool = False,
        expected: str | None = UNCHECKED,
    ) -> Event:
        """Make ``tag`` the champion; with ``shadow_previous`` the old champion becomes shadow."""
        name, _ = split_tag(tag)
        sha = self._verified_sha(tag)
        move = Move(name, "champion", tag, actor, "promote", reason, None, expected, sha)
        with db.translate_errors(self.url), db.write_tx(self.engine) as conn:
            previous = q.alias_value(conn, name, "champion")
            event = self._move(conn, move)
            shadow = q.alias_value(conn, name, "shadow")
            if shadow_previous and previous is not None and shadow != previous:
                self._move(conn, Move(name, "shadow", previous, actor, "promote", reason))
            return event

    def rollback(
        self,
        name: str,
        *,
        actor: str,
        reason: str = "",
        to: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        expected: str | None = UNCHECKED,
    ) -> Event:
        """Move champion back to the version that served before it (or to ``to``).

        Refuses (:class:`ArtifactCorrupt`) a target failing its sha256 check; :class:`Conflict`
        when there is no prior version, or the champion moved since this call (or since
        ``expected``, the champion the caller saw) — so of two concurrent rollbacks one wins.
        """
        self._require_model(name)
        current, target = self._rollback_target(name, to)
        seen = current if expected is UNCHECKED else expected
        move = Move(name, "champion", target, actor, "rollback", reason, evidence, seen)
        return self._apply([move.checked(self._verified_sha(target))])[0]

    def _rollback_target(self, name: str, to: str | None) -> tuple[str, str]:
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            current = q.alias_value(conn, name, "champion")
            events = q.champion_events(conn, name)
        if current is None:
            raise Conflict(f"model {name!r} has no champion to roll back; promote a version first")
        if to is not None:
            self._check_same_model(name, to)
            self.get(to)
            target: str | None = to
        else:
            target = previous_champion(events, current)
        if target is None:
            raise Conflict(
                f"model {name!r} has no prior version to roll back to (champion {current} is the "
                "first); pass --to TAG to choose one"
            )
        if target == current:
            raise Conflict(f"{target} is already the champion of {name!r}; nothing to roll back")
        return current, target

    def _first_aliases(
        self, name: str, moves: Mapping[str, str], *, actor: str, reason: str
    ) -> None:
        """Set ``moves`` in one transaction, only while ``name`` has no champion (so of two
        first runs registered at once, one sets the aliases and the other leaves them)."""
        shas = {tag: self._verified_sha(tag) for tag in set(moves.values())}
        with db.translate_errors(self.url), db.write_tx(self.engine) as conn:
            q.lock_revision(conn)
            if q.alias_value(conn, name, "champion") is not None:
                return
            for alias, tag in first_moves(moves):
                if q.alias_value(conn, name, alias) != tag:
                    move = Move(name, alias, tag, actor, "set_alias", reason)
                    self._move(conn, move.checked(shas[tag]))

    def _apply(self, moves: builtins.list[Move]) -> builtins.list[Event]:
        with db.translate_errors(self.url), db.write_tx(self.engine) as conn:
            return [self._move(conn, move) for move in moves]

    def _move(self, conn: Connection, move: Move) -> Event:
        return apply_move(conn, move, self.store)

    # --- housekeeping ---------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False, grace_s: float = 300.0) -> dict[str, Any]:
        """Remove versions nothing refers to, and store entries without a database row.

        Kept: alias targets, versions on a champion's rollback path, and their parents.
        Orphan store entries younger than ``grace_s`` are kept (a registration in flight).
        """
        with db.translate_errors(self.url):
            return cleanup.collect(self.engine, self.store, dry_run=dry_run, grace_s=grace_s)

    def try_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease ``key`` for ``owner`` for ``ttl_s`` seconds; False if held."""
        with db.translate_errors(self.url):
            return leases.try_lock(self.engine, key, owner, ttl_s)

    def release_lock(self, key: str, owner: str) -> bool:
        """Give the lease back (only its owner can); True when it was held by ``owner``."""
        with db.translate_errors(self.url):
            return leases.release(self.engine, key, owner)

    # --- internals ------------------------------------------------------------------------
    def _insert_version(
        self,
        tag: str,
        manifest: Mapping[str, Any],
        labels: Mapping[str, str],
        parent: str | None,
        actor: str,
        *,
        action: str,
    ) -> Version:
        name, version = split_tag(tag)
        ts = now_iso()
        row = {
            "name": name,
            "version": version,
            "tag": tag,
            "kind": manifest["kind"],
            "labels": dict(labels),
            "manifest": dict(manifest),
            "model_sha256": manifest["files"][MODEL],
            "parent_tag": parent,
            "created_at": ts,
            "actor": actor,
        }
        try:
            with db.translate_errors(self.url), db.write_tx(self.engine) as conn:
                conn.execute(db.versions.insert().values(**row))
                q.append_event(
                    conn,
                    ts=ts,
                    actor=actor,
                    action=action,
                    model=name,
                    to_version=tag,
                    evidence={"parent": parent},
                )
        except IntegrityError:  # registered concurrently by another process: same content
            pass
        return self.get(tag)

    def _find_by_sha(self, name: str, model_sha: str) -> Version | None:
        where = (db.versions.c.name == name) & (db.versions.c.model_sha256 == model_sha)
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            tag = conn.execute(sa.select(db.versions.c.tag).where(where)).scalar_one_or_none()
        if tag is None or not self.store.is_complete(tag):
            return None
        return self.get(tag)

    def _resolve_parent(
        self, manifest: Mapping[str, Any], parent_tag: str | None, *, strict: bool = True
    ) -> str | None:
        if parent_tag is not None:
            self.get(parent_tag)
            return parent_tag
        declared = manifest.get("parent")
        if not isinstance(declared, Mapping):
            return None
        tag, sha = declared.get("tag"), declared.get("sha256")
        if tag:
            try:
                return self.get(str(tag)).tag
            except (NotFound, ConfigError):
                if strict and not sha:
                    raise
        if sha:
            where = db.versions.c.model_sha256 == sha
            with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
                found = conn.execute(sa.select(db.versions.c.tag).where(where)).scalars().first()
            return found
        return None

    def _check_store_entry(self, tag: str, model_sha: str) -> None:
        manifest = verify_artifact(self.store.path_of(tag))
        if manifest["files"][MODEL] != model_sha:
            path = self.store.path_of(tag) / MODEL
            raise ArtifactCorrupt(
                f"{path} in the store differs from the artifact being registered; run "
                "`pruneguard models gc` to remove the stale entry, then register again",
                path=str(path),
            )

    def _verify_files(self, version: Version, path: Path) -> dict[str, Any]:
        manifest = verify_artifact(path)
        if manifest["files"].get(MODEL) != version.model_sha256:
            raise mismatch(version.tag, path)
        return manifest

    def _verified_sha(self, tag: str) -> str:
        """sha256-check the store entry of ``tag`` (no database access); its model's sha256."""
        split_tag(tag)
        if not self.store.is_complete(tag):
            raise NotFound(unknown_tag(tag))
        return str(verify_artifact(self.store.path_of(tag))["files"][MODEL])

    def _check_same_model(self, name: str, tag: str) -> None:
        tag_name, _ = split_tag(tag)
        if tag_name != name:
            raise ConfigError(
                f"{tag} is a version of model {tag_name!r}, not {name!r}; pick a tag from "
                f"`pruneguard models list {name}`"
            )

    def _require_model(self, name: str) -> None:
        with db.translate_errors(self.url), db.read_tx(self.engine) as conn:
            query = sa.select(db.versions.c.tag).where(db.versions.c.name == name).limit(1)
            found = conn.execute(query).first()
        if found is None:
            raise NotFound(
                f"no model named {name!r} is registered; see `pruneguard models list` "
                "or register one with `pruneguard models register DIR`"
            )


def _check_imported(tag: str, path: Path) -> None:
    manifest = verify_artifact(path)
    expected = f"{validate_name(str(manifest['name']))}:{manifest['files'][MODEL][:16]}"
    if tag != expected:
        raise ArtifactCorrupt(
            f"the archive's BentoML tag {tag} does not match its manifest ({expected}); "
            "export it again with `pruneguard models export`",
            path=str(path / "manifest.json"),
        )


def _labels(
    manifest: Mapping[str, Any], parent: str | None, extra: Mapping[str, str] | None
) -> dict[str, str]:
    pruning = manifest.get("pruning") or {}
    labels = {str(k): str(v) for k, v in (extra or {}).items()}
    labels.update(
        kind=str(manifest["kind"]),
        method=str(pruning.get("method", "none")) if isinstance(pruning, Mapping) else "none",
        parent=parent or "none",
    )
    return labels


def _run_kind(kind: str, dirs: Mapping[str, Any]) -> str:
    if kind not in dirs:
        raise ConfigError(f"alias plan value {kind!r} is not one of the run's {', '.join(dirs)}")
    return kind
