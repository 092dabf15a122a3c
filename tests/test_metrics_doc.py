"""docs/metrics.md lists exactly the metric families the code defines."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def test_metrics_doc_matches_the_code() -> None:
    from pruneguard.agent.metrics import METRIC_NAMES as AGENT
    from pruneguard.deploy.metrics import METRIC_NAMES as SERVING

    documented = set(re.findall(r"^\| `(pruneguard_[a-z_]+)`", DOC.read_text(), re.MULTILINE))
    assert documented == set(SERVING) | set(AGENT)
