"""Fixtures for the serving tests (helpers live in tests/support/serving_support.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import Models, make_models


@pytest.fixture
def models(pruneguard_home: Path, tmp_path: Path) -> Iterator[Models]:
    m = make_models(pruneguard_home, tmp_path / "artifacts")
    yield m
    m.registry.close()


@pytest.fixture
def isolated_pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh database on the shared server (dropped afterwards): tests never see each other."""
    import sqlalchemy as sa

    name = f"pg_serving_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
