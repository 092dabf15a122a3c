"""Garbage collection: versions nothing refers to, and store entries without a database row.

The rows go first, in one transaction holding the alias-move lock (so an alias cannot move
onto a version while it is being removed); the store entries after the commit. A crash in
between leaves store entries without rows, which the next collection removes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pruneguard.registry import db
from pruneguard.registry import queries as q
from pruneguard.registry.records import split_tag
from pruneguard.registry.store import ModelStore

__all__ = ["collect"]


def collect(engine: Engine, store: ModelStore, *, dry_run: bool, grace_s: float) -> dict[str, Any]:
    """Remove unreferenced versions and orphaned store entries older than ``grace_s``."""
    with db.write_tx(engine) as conn:
        q.lock_revision(conn)
        rows = conn.execute(sa.select(db.versions.c.tag, db.versions.c.parent_tag)).all()
        keep = q.referenced_tags(conn, {row.tag: row.parent_tag for row in rows})
        doomed = sorted(row.tag for row in rows if row.tag not in keep)
        if not dry_run:
            for tag in doomed:
                conn.execute(db.versions.delete().where(db.versions.c.tag == tag))
                q.append_event(
                    conn,
                    actor="gc",
                    action="gc",
                    model=split_tag(tag)[0],
                    from_version=tag,
                    reason="unreferenced",
                )
    known = {row.tag for row in rows}
    orphans = [t for t in store.tags() if t not in known and _age(store.path_of(t)) >= grace_s]
    if not dry_run:
        for tag in doomed + orphans:
            store.delete(tag)
        store.sweep_staging()
    return {"removed": doomed, "orphans": orphans, "kept": sorted(keep), "dry_run": dry_run}


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")
