"""The registry's SQL, one function per question, each run on a caller's connection (so the
caller decides the transaction)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pruneguard.registry import db
from pruneguard.registry.history import champion_stack
from pruneguard.registry.records import ALIASES, Event, now_iso

__all__ = [
    "alias_map",
    "alias_value",
    "append_event",
    "champion_events",
    "lock_revision",
    "referenced_tags",
    "version_row",
]


def version_row(conn: Connection, tag: str) -> Mapping[Any, Any] | None:
    query = sa.select(db.versions).where(db.versions.c.tag == tag)
    return conn.execute(query).mappings().first()


def alias_value(conn: Connection, name: str, alias: str) -> str | None:
    where = (db.aliases.c.name == name) & (db.aliases.c.alias == alias)
    return conn.execute(sa.select(db.aliases.c.tag).where(where)).scalar_one_or_none()


def alias_map(conn: Connection, tag: str | None = None) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    query = sa.select(db.aliases.c.tag, db.aliases.c.alias)
    if tag is not None:
        query = query.where(db.aliases.c.tag == tag)
    for row in conn.execute(query):
        found.setdefault(row.tag, []).append(row.alias)
    return {tag: sorted(names, key=ALIASES.index) for tag, names in found.items()}


def champion_events(conn: Connection, name: str) -> list[Event]:
    where = (db.events.c.model == name) & (db.events.c.alias == "champion")
    query = sa.select(db.events).where(where).order_by(db.events.c.id)
    return [Event.from_row(row) for row in conn.execute(query).mappings()]


def lock_revision(conn: Connection) -> int:
    # PostgreSQL: the row lock serialises alias moves; SQLite: BEGIN IMMEDIATE already did.
    query = sa.select(db.revision.c.value).where(db.revision.c.id == 1).with_for_update()
    return int(conn.execute(query).scalar_one())


def append_event(
    conn: Connection,
    *,
    actor: str,
    action: str,
    model: str,
    alias: str | None = None,
    from_version: str | None = None,
    to_version: str | None = None,
    reason: str = "",
    evidence: Mapping[str, Any] | None = None,
    ts: str | None = None,
) -> Event:
    """Append one event (the history is never updated or deleted)."""
    values = {
        "ts": ts or now_iso(),
        "actor": actor,
        "action": action,
        "model": model,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "reason": reason,
        "evidence": dict(evidence or {}),
    }
    key = conn.execute(db.events.insert().values(**values)).inserted_primary_key
    assert key is not None
    return Event.from_row({"id": key[0], **values})


def referenced_tags(conn: Connection, parents: Mapping[str, str | None]) -> set[str]:
    keep = set(conn.execute(sa.select(db.aliases.c.tag)).scalars())
    for name in conn.execute(sa.select(db.aliases.c.name).distinct()).scalars():
        keep.update(champion_stack(champion_events(conn, name)))
    frontier = list(keep)
    while frontier:
        parent = parents.get(frontier.pop())
        if parent is not None and parent not in keep:
            keep.add(parent)
            frontier.append(parent)
    return keep & set(parents)
