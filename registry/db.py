"""The registry database: schema (SQLAlchemy Core), engine creation, and transactions.

Tables (all prefixed ``registry_`` so they can share a database with the prediction log):

- ``registry_versions``  one row per registered version; the row is the commit point of a
  registration (a store entry without a row is an orphan that ``gc`` removes).
- ``registry_aliases``   (model, alias) -> tag: the movable state.
- ``registry_events``    append-only history of every registration and alias move.
- ``registry_revision``  one row, bumped in the same transaction as every alias move, so
  serving replicas poll one cheap row.
- ``registry_locks``     leases (``try_lock``): one active agent per model.

Every alias move first locks the revision row (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), so moves are serialised and compare-and-set is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from pruneguard.registry.errors import ConfigError, Unavailable
from pruneguard.registry.settings import mask_url

__all__ = [
    "aliases",
    "connect",
    "events",
    "locks",
    "metadata",
    "read_tx",
    "revision",
    "translate_errors",
    "versions",
    "write_tx",
]

SQLITE_BUSY_TIMEOUT_S = 60
_WRITE = "pruneguard_write"

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

versions = sa.Table(
    "registry_versions",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("tag", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("parent_tag", sa.String(128), nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.UniqueConstraint("name", "model_sha256", name="uq_registry_versions_sha"),
)

aliases = sa.Table(
    "registry_aliases",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("alias", sa.String(32), primary_key=True),
    sa.Column("tag", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

events = sa.Table(
    "registry_events",
    metadata,
    sa.Column("id", _EventId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("alias", sa.String(32), nullable=True),
    sa.Column("from_version", sa.String(128), nullable=True),
    sa.Column("to_version", sa.String(128), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Index("ix_registry_events_model", "model", "id"),
)

revision = sa.Table(
    "registry_revision",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.BigInteger, nullable=False),
)

locks = sa.Table(
    "registry_locks",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema in place; :class:`Unavailable` when unreachable."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL {url!r} is not a valid SQLAlchemy URL; use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed)
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    with translate_errors(url):
        _create_schema(engine)
    return engine


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"cannot create the directory for {mask_url(str(url))} ({exc}); "
                "check PRUNEGUARD_HOME / --db-url point somewhere writable"
            ) from exc
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) issue BEGIN, not the sqlite3 module.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front: two writers queue instead of one failing
        # later with "database is locked" on lock upgrade.
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _create_schema(engine: Engine) -> None:
    # Two processes may create the schema at once; the loser of the race retries.
    for attempt in range(5):
        try:
            metadata.create_all(engine)
            with write_tx(engine) as conn:
                exists = conn.execute(sa.select(revision.c.id).where(revision.c.id == 1)).first()
                if exists is None:
                    conn.execute(revision.insert().values(id=1, value=0))
            return
        except DBAPIError as exc:
            if isinstance(exc, OperationalError) and not _is_schema_race(exc):
                raise  # unreachable: translate_errors names the URL
            if not _is_schema_race(exc):
                raise Unavailable(
                    f"cannot create the registry tables in {mask_url(str(engine.url))} "
                    f"({_first_line(exc)}); let the database user create tables, or create "
                    "them once as an owner"
                ) from exc
            if attempt == 4:
                raise


def _is_schema_race(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "already exists" in text or "duplicate key" in text


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A read-write transaction (SQLite: ``BEGIN IMMEDIATE``); rolled back on any error."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: one consistent snapshot for several queries."""
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn connection-level database failures into :class:`Unavailable` naming the URL."""
    try:
        yield
    except OperationalError as exc:
        raise Unavailable(_unavailable_message(url, exc)) from exc
    except ModuleNotFoundError as exc:
        raise Unavailable(
            f"no database driver for {mask_url(url)} ({exc}); install it "
            "(PostgreSQL: pip install 'psycopg[binary]') or use a sqlite:/// URL"
        ) from exc


def _unavailable_message(url: str, exc: OperationalError) -> str:
    detail = _first_line(exc)
    return (
        f"cannot reach the registry database {mask_url(url)} ({detail}); check that the server "
        "is running and reachable, the user/password and database name, or set "
        "PRUNEGUARD_DB_URL / --db-url"
    )
