"""Simulated windows of paired traffic, fed through the real checks and the real policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pruneguard.agent.checks import CheckConfig, accuracy_gap_check, agreement_check, cosine_check
from pruneguard.agent.policy import (
    CheckResult,
    Decision,
    PolicyConfig,
    PolicyState,
    after_rollback,
    decide,
)

N_CLASSES = 10


@dataclass(frozen=True)
class Traffic:
    """Shadow accuracy, champion accuracy, and how many requests a window holds."""

    shadow_accuracy: float = 0.96
    champion_accuracy: float = 0.95
    pairs: int = 400
    labelled_share: float = 1.0


def window(rng: np.random.Generator, traffic: Traffic) -> tuple[np.ndarray, ...]:
    """(champion, shadow, labels) for labelled pairs and (champion, shadow) for all pairs.

    The champion is a pruned copy of the shadow: it repeats the shadow's answer except on a
    few requests, where it errs (or, rarely, repairs the shadow's error), so its accuracy is
    ``champion_accuracy`` on average and the two agree on most requests.
    """
    n = traffic.pairs
    labels = rng.integers(0, N_CLASSES, n)
    wrong = (labels + rng.integers(1, N_CLASSES, n)) % N_CLASSES
    shadow_ok = rng.random(n) < traffic.shadow_accuracy
    shadow = np.where(shadow_ok, labels, wrong)
    drop = max(traffic.shadow_accuracy - traffic.champion_accuracy, 0.0)
    lose = shadow_ok & (rng.random(n) < drop / traffic.shadow_accuracy)
    champion = np.where(lose, (labels + 1) % N_CLASSES, shadow)
    labelled = rng.random(n) < traffic.labelled_share
    return champion[labelled], shadow[labelled], labels[labelled], champion, shadow


def checks_for(
    rng: np.random.Generator, traffic: Traffic, config: CheckConfig
) -> list[CheckResult]:
    champ_l, shadow_l, labels, champ, shadow = window(rng, traffic)
    return [
        accuracy_gap_check(champ_l, shadow_l, labels, expected_gap=0.01, config=config),
        agreement_check(champ, shadow, expected=0.97, config=config),
    ]


def run_ticks(
    rng: np.random.Generator,
    traffics: list[Traffic],
    *,
    checks: CheckConfig,
    policy: PolicyConfig,
    interval: float = 30.0,
) -> list[tuple[PolicyState, Decision]]:
    state = PolicyState(champion="digits:a")
    out = []
    for i, traffic in enumerate(traffics):
        now = i * interval
        state, decision = decide(state, checks_for(rng, traffic, checks), now, policy)
        out.append((state, decision))
        if decision.action == "rollback":
            state = after_rollback(state, now, "done", policy)
    return out


def cosine_windows(
    rng: np.random.Generator, pool: np.ndarray, n: int, *, size: int, shift: float = 0.0
) -> list[np.ndarray]:
    """``n`` windows of ``size`` per-request champion/shadow cosines drawn from ``pool`` (the
    cosines measured on held-out texts: stationary traffic), lowered by ``shift``."""
    return [rng.choice(pool, size=size) - shift for _ in range(n)]


def cosine_ticks(
    windows: list[np.ndarray],
    expected: float,
    *,
    checks: CheckConfig,
    policy: PolicyConfig,
    interval: float = 30.0,
) -> list[str]:
    """The policy's action on each window's cosine check, rolling back as the agent does."""
    state, actions = PolicyState(champion="texts:a"), []
    for i, values in enumerate(windows):
        now = i * interval
        state, decision = decide(
            state, [cosine_check(values, expected=expected, config=checks)], now, policy
        )
        actions.append(decision.action)
        if decision.action == "rollback":
            state = after_rollback(state, now, "done", policy)
    return actions
