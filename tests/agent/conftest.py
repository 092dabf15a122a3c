"""Agent test fixtures; the helpers (agent_sim, agent_env) live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, pruneguard_home: Path) -> Iterator[str | None]:
    """The registry + prediction log database: the default SQLite file under the test's
    home (None), or a PostgreSQL schema of its own, dropped afterwards (as in
    tests/registry/conftest.py), so tests never see each other's rows or leases."""
    if request.param == "sqlite":
        yield None
        return
    from pg_support import postgres_schema

    with postgres_schema(request.getfixturevalue("postgres_url"), "agent_test") as url:
        yield url
