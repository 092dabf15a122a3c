"""The agent's causal-lm checks: per-request token agreement and log-prob gap of the dense
shadow scoring the champion's tokens, against the offline values, one-sided."""

from __future__ import annotations

import numpy as np

from pruneguard.agent.checks import CheckConfig, token_checks
from pruneguard.agent.policy import FAIL, INCONCLUSIVE, PASS

CHECKS = CheckConfig()
# bench/llm_heads.py, KV −33% after recovery: shadow-direction agreement 0.687, gap 0.43 nats
OFFLINE_AGREEMENT, OFFLINE_GAP = 0.687, 0.43


def window(rng: np.random.Generator, n: int = 400, agreement: float = OFFLINE_AGREEMENT,
           gap: float = OFFLINE_GAP) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per request (32 tokens each): the share of tokens agreed, and the mean gap."""
    agreed = rng.binomial(32, agreement, n) / 32
    gaps = rng.gamma(4.0, gap / 4.0, n)
    return agreed, gaps


def outcomes(agreed: np.ndarray, gaps: np.ndarray, **expected: float | None) -> tuple[str, str]:
    checks = token_checks(
        agreed,
        gaps,
        expected_agreement=expected.get("agreement", OFFLINE_AGREEMENT),
        expected_gap=expected.get("gap", OFFLINE_GAP),
        config=CHECKS,
    )
    return checks[0].outcome, checks[1].outcome


def test_each_check_fails_on_its_own_decline_only() -> None:
    rng = np.random.default_rng(0)
    assert outcomes(*window(rng)) == (PASS, PASS)
    assert outcomes(*window(rng, agreement=OFFLINE_AGREEMENT - 0.1)) == (FAIL, PASS)
    assert outcomes(*window(rng, gap=OFFLINE_GAP + 0.3)) == (PASS, FAIL)
    assert outcomes(*window(rng, agreement=0.95, gap=0.1)) == (PASS, PASS)  # better: one-sided


def test_too_few_requests_or_no_offline_value_is_inconclusive() -> None:
    rng = np.random.default_rng(1)
    few = window(rng, n=CHECKS.min_pairs - 1, agreement=0.2, gap=3.0)
    assert outcomes(*few) == (INCONCLUSIVE, INCONCLUSIVE)
    many = window(rng)
    assert outcomes(*many, agreement=None, gap=float("nan")) == (INCONCLUSIVE, INCONCLUSIVE)
    checks = token_checks(*many, expected_agreement=None, expected_gap=None, config=CHECKS)
    assert "metrics.shadow_token_agreement" in checks[0].reason
    assert "metrics.shadow_logprob_gap" in checks[1].reason


def test_stationary_windows_raise_almost_no_false_alarms() -> None:
    rng = np.random.default_rng(2)
    alarms = sum(FAIL in outcomes(*window(rng)) for _ in range(300))
    assert alarms <= 3  # alpha 0.01 per check, and the margins put the limit below the mean
