"""Makes the helpers in this folder (monitoring_files) importable by name."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))  # after tests/: `conftest` stays the root one
# The repository root before tests/: otherwise tests/registry (no __init__.py) shadows the
# `registry` package as an empty namespace package when the root is not on sys.path.
if str(HERE.parents[1]) not in sys.path[:2]:
    sys.path.insert(0, str(HERE.parents[1]))


@pytest.fixture(scope="session")
def amtool_bin() -> str:
    """amtool (Debian prometheus-alertmanager): skips locally, fails in CI like promtool_bin."""
    path = shutil.which("amtool")
    if not path:
        what = "amtool (apt-get install prometheus-alertmanager)"
        if os.environ.get("PRUNEGUARD_REQUIRE_SERVICES"):
            pytest.fail(
                f"{what} is required in CI (PRUNEGUARD_REQUIRE_SERVICES is set) but missing"
            )
        pytest.skip(f"{what} not available")
    return path
