"""Reliability suite fixtures. Its helpers (reliability_support) and the serving and agent
suites' (serving_support, agent_env) live in tests/support/, shared, not copied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability_support import PgDatabase


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[PgDatabase]:
    """A PostgreSQL database of this test's own (dropped afterwards), which the test can make
    unreachable (:meth:`PgDatabase.block`) without touching the server other tests share."""
    database = PgDatabase.create(postgres_url)
    try:
        yield database
    finally:
        database.drop()
