"""Agent test helpers (agent_sim, agent_env) import by name, like tests/artifact_factory.py.

tests/ (on sys.path via the root conftest) holds folders named like the real packages
(tests/agent, tests/registry) without an __init__.py: the repository root must come first,
or `import registry` finds an empty namespace package.
"""

from __future__ import annotations

import sys
import uuid
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
    base = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    schema = f"agent_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
