"""The prediction log (registry/predictions.py) on real SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from pruneguard.registry.db import connect
from pruneguard.registry.errors import ConfigError, Unavailable
from pruneguard.registry.predictions import PredictionLog, read_window


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        url = request.getfixturevalue("isolated_pg_url")
    eng = connect(url)
    yield eng
    eng.dispose()


def _row(
    request_id: str,
    ts: float,
    variant: str = "champion",
    model: str = "digits",
    prediction: int = 1,
) -> dict[str, object]:
    return {
        "request_id": request_id,
        "ts": ts,
        "model": model,
        "variant": variant,
        "version": "v1" if variant == "champion" else "v0",
        "features": [0.5, 1.5, 2.5],
        "prediction": prediction,
        "probabilities": [0.25, 0.75],
        "latency_ms": 0.3,
    }


def test_window_joins_labels_one_row_per_request_and_variant(engine: Engine) -> None:
    log = PredictionLog(engine)
    log.write_predictions(
        [_row("a", 10.0), _row("a", 10.0, "shadow", prediction=0), _row("b", 11.0)]
    )
    log.write_predictions([_row("c", 12.0, model="other")])
    log.write_feedback("a", 1, ts=13.0)
    log.write_feedback("a", 0, ts=14.0)  # a corrected label replaces the first

    frame = read_window(engine, "digits", since_ts=0.0)
    assert list(frame.columns) == [
        "request_id",
        "ts",
        "variant",
        "version",
        "prediction",
        "probabilities",
        "features",
        "latency_ms",
        "label",
    ]
    assert list(zip(frame.request_id, frame.variant, strict=True)) == [
        ("a", "champion"),
        ("a", "shadow"),
        ("b", "champion"),
    ]
    assert frame.label.tolist()[:2] == [0.0, 0.0]
    assert math.isnan(frame.label.iloc[2])
    assert frame.features.iloc[0] == [0.5, 1.5, 2.5]
    assert frame.probabilities.iloc[1] == [0.25, 0.75]


def test_window_bounds_and_limit_keep_the_newest(engine: Engine) -> None:
    log = PredictionLog(engine)
    log.write_predictions([_row(f"r{i}", float(i)) for i in range(10)])
    assert read_window(engine, "digits", since_ts=3.0, until_ts=6.0).request_id.tolist() == [
        "r3",
        "r4",
        "r5",
    ]
    assert read_window(engine, "digits", since_ts=0.0, limit=2).request_id.tolist() == ["r8", "r9"]
    assert read_window(engine, "nobody", since_ts=0.0).empty


def test_prune_by_age_then_by_count(engine: Engine) -> None:
    log = PredictionLog(engine)
    log.write_predictions([_row(f"r{i}", float(i)) for i in range(10)])
    log.write_feedback("r1", 1, ts=1.0)
    assert log.prune(older_than_ts=4.0) == 4
    assert log.prune(max_rows=3) == 3
    assert read_window(engine, "digits", since_ts=0.0).request_id.tolist() == ["r7", "r8", "r9"]
    assert log.prune(older_than_ts=0.0, max_rows=100) == 0


def test_bad_rows_and_ids_are_refused_with_the_fix(engine: Engine) -> None:
    log = PredictionLog(engine)
    bad = _row("a", 1.0)
    del bad["features"]
    with pytest.raises(ConfigError, match="features"):
        log.write_predictions([bad])
    with pytest.raises(ConfigError, match="variant"):
        log.write_predictions([_row("a", 1.0, variant="canary")])
    with pytest.raises(ConfigError, match=r"1\.\.64"):
        log.write_feedback("x" * 65, 1)


def test_unreachable_database_is_unavailable_naming_the_url(tmp_path: Path) -> None:
    eng = connect(f"sqlite:///{tmp_path / 'log.db'}")
    log = PredictionLog(eng)
    eng.dispose()
    (tmp_path / "log.db").unlink()
    (tmp_path / "log.db").mkdir()  # the path is now a directory: every connection fails
    with pytest.raises(Unavailable, match=r"log\.db"):
        log.write_predictions([_row("a", 1.0)])


def test_shadow_rows_take_their_features_from_the_champion_row(engine: Engine) -> None:
    log = PredictionLog(engine)
    shadow = _row("a", 10.0, "shadow")
    shadow["features"] = []  # the serving side stores the input once per request
    orphan = _row("b", 11.0, "shadow")
    orphan["features"] = []  # its champion row was never written (dropped)
    log.write_predictions([_row("a", 10.0), shadow, orphan])
    frame = read_window(engine, "digits", since_ts=0.0)
    assert frame.features.tolist() == [[0.5, 1.5, 2.5], [0.5, 1.5, 2.5], []]
