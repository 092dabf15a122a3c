"""The prediction log (DESIGN §3.5): what each served variant answered, and the labels that
arrive later.

Two tables in the registry's database (SQLAlchemy Core, SQLite or PostgreSQL):

- ``predictions``: one row per (request_id, variant): the input row, the class, the
  probabilities and the latency. ``deploy`` writes it in batches (:class:`PredictionLog`).
  A shadow row may store ``features`` as ``[]``: its input is the champion row's of the same
  request_id (serializing it twice would double the log's cost); :func:`read_window` fills
  it back in.
- ``feedback``: one ground-truth label per request_id (the last one sent wins).

The agent reads windows of both through :func:`read_window`. Retention is bounded by
:meth:`PredictionLog.prune` (by age and by row count).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from pruneguard.registry.db import read_tx, write_tx
from pruneguard.registry.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PREDICTION_COLUMNS",
    "VARIANTS",
    "WINDOW_COLUMNS",
    "PredictionLog",
    "create_tables",
    "feedback",
    "metadata",
    "predictions",
    "read_window",
]

VARIANTS = ("champion", "shadow")
PREDICTION_COLUMNS = (
    "request_id",
    "ts",
    "model",
    "variant",
    "version",
    "features",
    "prediction",
    "probabilities",
    "latency_ms",
)
WINDOW_COLUMNS = (
    "request_id",
    "ts",
    "variant",
    "version",
    "prediction",
    "probabilities",
    "features",
    "latency_ms",
    "label",
)
REQUEST_ID_MAX = 64

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("request_id", String(REQUEST_ID_MAX), nullable=False, index=True),
    Column("ts", Float, nullable=False, index=True),
    Column("model", String(200), nullable=False),
    Column("variant", String(16), nullable=False),
    Column("version", String(200), nullable=False),
    Column("features", JSON, nullable=False),
    Column("prediction", Integer, nullable=False),
    Column("probabilities", JSON, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Index("ix_predictions_model_ts", "model", "ts"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(REQUEST_ID_MAX), primary_key=True),
    Column("ts", Float, nullable=False, index=True),
    Column("label", Integer, nullable=False),
)


def create_tables(engine: Engine) -> None:
    """Create both tables if missing. Safe when several replicas start at once."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except (IntegrityError, DBAPIError) as exc:
        # Two processes raced to CREATE TABLE on PostgreSQL: the loser sees a duplicate
        # type/relation. A second checkfirst pass finds the winner's tables.
        try:
            metadata.create_all(engine, checkfirst=True)
        except DBAPIError:
            raise _unavailable(engine, exc) from exc


def _unavailable(engine: Engine, exc: Exception) -> Unavailable:
    return Unavailable(
        f"prediction log database {engine.url.render_as_string(hide_password=True)} "
        f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
        "check that the database is running and the URL (PRUNEGUARD_DB_URL) is right"
    )


def _check_row(row: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in PREDICTION_COLUMNS if key not in row]
    if missing:
        raise ConfigError(
            f"prediction row lacks {missing}; a row needs all of {list(PREDICTION_COLUMNS)}"
        )
    if row["variant"] not in VARIANTS:
        raise ConfigError(f"variant is {row['variant']!r}, expected one of {VARIANTS}")
    return {key: row[key] for key in PREDICTION_COLUMNS}


class PredictionLog:
    """Write side of the prediction log. Thread-safe (the engine pools connections)."""

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self.engine = engine
        if create:
            create_tables(engine)

    def write_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (dicts with :data:`PREDICTION_COLUMNS`) in one transaction."""
        if not rows:
            return
        checked = [_check_row(row) for row in rows]
        try:
            with write_tx(self.engine) as conn:
                conn.execute(insert(predictions), checked)
        except DBAPIError as exc:
            raise _unavailable(self.engine, exc) from exc

    def write_feedback(self, request_id: str, label: int, *, ts: float | None = None) -> None:
        """Record the label of ``request_id`` durably (committed when this returns)."""
        if not request_id or len(request_id) > REQUEST_ID_MAX:
            raise ConfigError(
                f"request_id {request_id!r} must be 1..{REQUEST_ID_MAX} characters; "
                "send the request_id a /predict response returned"
            )
        values = {"request_id": request_id, "ts": time.time() if ts is None else ts, "label": label}
        try:
            self._upsert_feedback(values)
        except DBAPIError as exc:
            raise _unavailable(self.engine, exc) from exc

    def _upsert_feedback(self, values: dict[str, Any]) -> None:
        try:
            with write_tx(self.engine) as conn:
                conn.execute(insert(feedback), values)
        except IntegrityError:  # a label for this request exists: the newer one wins
            with write_tx(self.engine) as conn:
                conn.execute(
                    update(feedback)
                    .where(feedback.c.request_id == values["request_id"])
                    .values(ts=values["ts"], label=values["label"])
                )

    def prune(self, older_than_ts: float | None = None, max_rows: int | None = None) -> int:
        """Delete predictions (and feedback) older than ``older_than_ts``, then the oldest
        predictions beyond ``max_rows``. Returns how many prediction rows were deleted."""
        if max_rows is not None and max_rows < 0:
            raise ConfigError(f"max_rows is {max_rows}; it must be >= 0 (or None for no limit)")
        deleted = 0
        try:
            with write_tx(self.engine) as conn:
                if older_than_ts is not None:
                    deleted += conn.execute(
                        delete(predictions).where(predictions.c.ts < older_than_ts)
                    ).rowcount
                    conn.execute(delete(feedback).where(feedback.c.ts < older_than_ts))
                if max_rows is not None:
                    deleted += self._prune_count(conn, max_rows)
        except DBAPIError as exc:
            raise _unavailable(self.engine, exc) from exc
        return deleted

    @staticmethod
    def _prune_count(conn: Any, max_rows: int) -> int:
        total = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
        if total <= max_rows:
            return 0
        # ids grow with insertion time: keep the newest max_rows ids.
        cutoff = conn.execute(
            select(predictions.c.id).order_by(predictions.c.id.desc()).offset(max_rows).limit(1)
        ).scalar_one()
        return int(conn.execute(delete(predictions).where(predictions.c.id <= cutoff)).rowcount)


def read_window(
    engine: Engine,
    model: str,
    *,
    since_ts: float,
    until_ts: float | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Predictions of ``model`` with ``since_ts <= ts < until_ts``, joined with their labels.

    One row per (request_id, variant), oldest first; with ``limit``, the newest ``limit``
    rows. Columns: :data:`WINDOW_COLUMNS`; ``label`` is a float, NaN where no feedback came.
    """
    import pandas as pd

    query = (
        select(
            predictions.c.id,
            *(predictions.c[name] for name in WINDOW_COLUMNS if name != "label"),
            feedback.c.label,
        )
        .select_from(
            predictions.outerjoin(feedback, predictions.c.request_id == feedback.c.request_id)
        )
        .where(predictions.c.model == model, predictions.c.ts >= since_ts)
        .order_by(predictions.c.ts.desc(), predictions.c.id.desc())
    )
    if until_ts is not None:
        query = query.where(predictions.c.ts < until_ts)
    if limit is not None:
        query = query.limit(limit)
    create_tables(engine)  # an agent may start before any replica has written
    try:
        with read_tx(engine) as conn:
            rows = conn.execute(query).mappings().all()
    except DBAPIError as exc:
        raise _unavailable(engine, exc) from exc
    frame = pd.DataFrame([dict(row) for row in rows], columns=["id", *WINDOW_COLUMNS])
    frame = frame.drop_duplicates(["request_id", "variant"], keep="first")  # newest wins
    frame = frame.sort_values(["ts", "id"], kind="stable").drop(columns="id")
    frame["features"] = _shared_features(frame)
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce").astype(float)
    return frame.reset_index(drop=True)


def _shared_features(frame: pd.DataFrame) -> list[Any]:
    """Features of each row, taking a shadow row's empty list from its champion row."""
    is_champion = frame["variant"] == "champion"
    champion = dict(
        zip(frame.loc[is_champion, "request_id"], frame.loc[is_champion, "features"], strict=True)
    )
    return [
        champion.get(request_id, []) if isinstance(features, list) and not features else features
        for request_id, features in zip(frame["request_id"], frame["features"], strict=True)
    ]
