"""Reliability suite fixtures. The helpers live in reliability_support.py; the serving and
agent suites' helpers (serving_support, agent_env) are imported by name, not copied.

tests/ (on sys.path via the root conftest) holds folders named like the real packages
(tests/registry, tests/deploy, tests/agent) without an __init__.py: the repository root must
come first, or `import registry` finds an empty namespace package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TESTS.parent))
sys.path.insert(1, str(Path(__file__).parent))
sys.path.insert(2, str(_TESTS / "deploy"))  # serving_support
sys.path.insert(3, str(_TESTS / "agent"))  # agent_env

from reliability_support import PgDatabase  # noqa: E402 - needs the sys.path above


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[PgDatabase]:
    """A PostgreSQL database of this test's own (dropped afterwards), which the test can make
    unreachable (:meth:`PgDatabase.block`) without touching the server other tests share."""
    database = PgDatabase.create(postgres_url)
    try:
        yield database
    finally:
        database.drop()
