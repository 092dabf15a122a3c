"""Agent test helpers (agent_sim, agent_env) import by name, like tests/artifact_factory.py.

tests/ (on sys.path via the root conftest) holds folders named like the real packages
(tests/agent, tests/registry) without an __init__.py: the repository root must come first,
or `import registry` finds an empty namespace package.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(1, str(Path(__file__).parent))
