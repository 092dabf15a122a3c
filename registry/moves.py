"""Alias moves: what a move asks for (:class:`Move`) and how one is applied inside a
transaction (:func:`apply_move`: compare-and-set, event, revision bump).

:class:`registry.registry.Registry` decides which moves to make (promote, rollback, a first
run's aliases) and opens the transaction; this module does one move and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from pruneguard.registry import db
from pruneguard.registry import queries as q
from pruneguard.registry.artifact import MODEL
from pruneguard.registry.errors import ArtifactCorrupt, Conflict, NotFound
from pruneguard.registry.records import Event, now_iso, unknown_tag
from pruneguard.registry.store import ModelStore

__all__ = ["UNCHECKED", "Move", "apply_move", "first_moves", "mismatch"]


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Any = _Unchecked()
"""Default of ``expected=``: move without comparing (``None`` means "expect no alias")."""


def first_moves(moves: Mapping[str, str]) -> list[tuple[str, str]]:
    """The first alias moves of a model, in order. When the champion is not the baseline
    (a pruned champion over a dense baseline), the baseline is made champion first, so the
    history holds a prior champion and the first rollback has somewhere to go."""
    ordered = list(moves.items())
    baseline = moves.get("baseline")
    if baseline is not None and moves.get("champion") not in (None, baseline):
        ordered.insert(0, ("champion", baseline))
    return ordered


@dataclass(frozen=True)
class Move:
    """One requested alias move. ``expected``: the tag the alias must hold now (compare-and-
    set), or UNCHECKED. ``model_sha``: the target's model.onnx sha256 as just verified on
    disk, which must be the registered one (None: not checked)."""

    name: str
    alias: str
    tag: str
    actor: str
    action: str
    reason: str = ""
    evidence: Mapping[str, Any] | None = None
    expected: str | None = UNCHECKED
    model_sha: str | None = None

    def checked(self, model_sha: str) -> Move:
        return replace(self, model_sha=model_sha)

    def check_current(self, current: str | None) -> None:
        if self.expected is not UNCHECKED and current != self.expected:
            raise Conflict(
                f"{self.alias} of {self.name!r} is {current or 'unset'}, not "
                f"{self.expected or 'unset'} as expected: another actor moved it; re-read and retry"
            )
        if current == self.tag:
            raise Conflict(f"{self.alias} of {self.name!r} already points at {self.tag}")


def apply_move(conn: Connection, move: Move, store: ModelStore) -> Event:
    """One alias move in ``conn``'s transaction: the compare-and-set, the event, the
    revision bump. Raises before writing anything when the move is not allowed."""
    q.lock_revision(conn)
    row = q.version_row(conn, move.tag)
    if row is None:
        raise NotFound(unknown_tag(move.tag))
    if move.model_sha is not None and row["model_sha256"] != move.model_sha:
        raise mismatch(move.tag, store.path_of(move.tag))
    current = q.alias_value(conn, move.name, move.alias)
    move.check_current(current)
    ts = now_iso()
    where = (db.aliases.c.name == move.name) & (db.aliases.c.alias == move.alias)
    if current is None:
        values = {"name": move.name, "alias": move.alias, "tag": move.tag, "updated_at": ts}
        conn.execute(db.aliases.insert().values(**values))
    else:
        conn.execute(db.aliases.update().where(where).values(tag=move.tag, updated_at=ts))
    conn.execute(db.revision.update().values(value=db.revision.c.value + 1))
    return q.append_event(
        conn,
        ts=ts,
        actor=move.actor,
        action=move.action,
        model=move.name,
        alias=move.alias,
        from_version=current,
        to_version=move.tag,
        reason=move.reason,
        evidence=move.evidence,
    )


def mismatch(tag: str, path: Path) -> ArtifactCorrupt:
    """The error for a store entry whose manifest no longer describes the registered model."""
    return ArtifactCorrupt(
        f"{path / 'manifest.json'} does not describe the registered {MODEL} of {tag}; "
        "the store entry was modified: re-import it from a good copy",
        path=str(path / "manifest.json"),
    )
