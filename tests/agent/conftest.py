"""Agent test helpers (agent_sim, agent_env) import by name, like tests/artifact_factory.py.

tests/ (on sys.path via the root conftest) holds folders named like the real packages
(tests/agent, tests/registry) without an __init__.py: the repository root must come first,
or `import registry` finds an empty namespace package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(1, str(Path(__file__).parent))


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
