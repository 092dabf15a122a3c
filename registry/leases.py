"""Leases in the registry database: ``try_lock`` lets one agent per model act at a time,
across processes and machines. Expiry compares the callers' clocks (keep them in sync)."""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from pruneguard.registry import db

__all__ = ["release", "try_lock"]


def try_lock(engine: Engine, key: str, owner: str, ttl_s: float) -> bool:
    """Take ``key`` (free, expired, or already ``owner``'s) for ``ttl_s`` seconds."""
    now = time.time()
    values = {"owner": owner, "expires_at": now + ttl_s}
    takeable = (db.locks.c.owner == owner) | (db.locks.c.expires_at < now)
    # One conditional UPDATE: of two contenders for an expired lease, one matches the row.
    with db.write_tx(engine) as conn:
        where = (db.locks.c.key == key) & takeable
        if conn.execute(db.locks.update().where(where).values(**values)).rowcount == 1:
            return True
    try:
        with db.write_tx(engine) as conn:
            conn.execute(db.locks.insert().values(key=key, **values))
        return True
    except IntegrityError:  # held by someone else, or taken between the two statements
        return False


def release(engine: Engine, key: str, owner: str) -> bool:
    """Give ``key`` back; True when ``owner`` held it."""
    where = (db.locks.c.key == key) & (db.locks.c.owner == owner)
    with db.write_tx(engine) as conn:
        return bool(conn.execute(db.locks.delete().where(where)).rowcount)
