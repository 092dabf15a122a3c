"""The checks one tick runs on a window: paired accuracy gap, label-free agreement, the
embedding cosine, a decoder's token agreement and log-prob gap, drift.

Each takes plain arrays (so simulations feed them directly) and returns a
:class:`~agent.policy.CheckResult` that is ``pass``, ``fail`` or ``inconclusive``.

Paired accuracy (McNemar). On the requests both variants answered and that have a label, let
``b`` = champion right & shadow wrong, ``c`` = champion wrong & shadow right, ``n`` = pairs.
The accuracy gap (shadow − champion) is ``(c − b) / n``. Given the ``D = b + c`` discordant
pairs, ``c ~ Binomial(D, q)`` and ``gap <= tol  ⇔  q <= q0 = 1/2 + tol·n / (2D)``; the
one-sided test of ``q <= q0`` is McNemar's exact test, moved to a non-inferiority margin
(``tol = 0`` gives the classic test). ``tol`` is the gap measured offline
(``baseline_accuracy − accuracy`` in the champion's manifest) plus ``accuracy_margin``:
the pruned model is *expected* to trail the dense one by that much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from pruneguard.agent.policy import FAIL, INCONCLUSIVE, PASS, CheckResult
from pruneguard.registry.errors import ConfigError

__all__ = [
    "CheckConfig",
    "accuracy_gap_check",
    "agreement_check",
    "agreement_p_value",
    "cosine_check",
    "drift_check",
    "inconclusive",
    "mcnemar_p_value",
    "mean_check",
    "token_checks",
]


@dataclass(frozen=True)
class CheckConfig:
    alpha: float = 0.01
    accuracy_margin: float = 0.01
    min_labelled_pairs: int = 300
    agreement_margin: float = 0.03
    min_pairs: int = 300
    drift_alpha: float = 0.05
    min_drift_rows: int = 100
    cosine_margin: float = 0.02
    token_agreement_margin: float = 0.03  # causal-lm: share of tokens
    logprob_gap_margin: float = 0.1  # causal-lm: nats per token

    def __post_init__(self) -> None:
        for name in ("alpha", "drift_alpha"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{name} is {value}; it must be in (0, 1), e.g. 0.01")
        for name in (
            "accuracy_margin",
            "agreement_margin",
            "cosine_margin",
            "token_agreement_margin",
        ):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be in [0, 1)")
        if self.logprob_gap_margin < 0:
            raise ConfigError(
                f"logprob_gap_margin is {self.logprob_gap_margin}; it must be >= 0 nats, e.g. 0.1"
            )
        for name in ("min_labelled_pairs", "min_pairs", "min_drift_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be >= 1 samples")


def inconclusive(name: str, samples: int, reason: str) -> CheckResult:
    return CheckResult(name, INCONCLUSIVE, samples, reason=reason)


def mcnemar_p_value(b: int, c: int, n: int, tolerance: float = 0.0, exact: bool = True) -> float:
    """One-sided p-value for "the champion trails the shadow by more than ``tolerance``".

    ``exact``: binomial test on the discordant pairs; else the continuity-corrected
    chi-square approximation (one-sided: half the upper tail when ``c`` is above its
    expectation), for very large windows.
    """
    from scipy import stats

    discordant = b + c
    if discordant == 0:
        return 1.0
    q0 = 0.5 + tolerance * n / (2 * discordant)
    if q0 >= 1.0:
        return 1.0  # even c = D could not exceed the tolerance
    if exact:
        return float(stats.binomtest(c, discordant, q0, alternative="greater").pvalue)
    expected = discordant * q0
    excess = c - expected
    if excess <= 0:
        return 1.0
    statistic = max(abs(excess) - 0.5, 0.0) ** 2 / (discordant * q0 * (1 - q0))
    return float(stats.chi2.sf(statistic, df=1) / 2)


def accuracy_gap_check(
    champion: ArrayLike,
    shadow: ArrayLike,
    labels: ArrayLike,
    *,
    expected_gap: float,
    config: CheckConfig,
) -> CheckResult:
    """Fail when the champion is significantly more than ``expected_gap + margin`` behind."""
    champ, shad, lab = (np.asarray(a) for a in (champion, shadow, labels))
    n = int(lab.size)
    if n < config.min_labelled_pairs:
        return inconclusive(
            "accuracy_gap",
            n,
            f"{n} labelled pairs < min_labelled_pairs={config.min_labelled_pairs}",
        )
    champ_ok, shad_ok = champ == lab, shad == lab
    b = int(np.sum(champ_ok & ~shad_ok))
    c = int(np.sum(~champ_ok & shad_ok))
    gap = (c - b) / n
    tolerance = max(expected_gap, 0.0) + config.accuracy_margin
    p = mcnemar_p_value(b, c, n, tolerance, exact=b + c <= 5000)
    outcome = FAIL if p < config.alpha else PASS if gap <= tolerance else INCONCLUSIVE
    detail = {
        "champion_accuracy": float(champ_ok.mean()),
        "shadow_accuracy": float(shad_ok.mean()),
        "b_champion_only_right": b,
        "c_shadow_only_right": c,
        "tolerance": tolerance,
        "alpha": config.alpha,
    }
    reason = f"gap {gap:+.4f} vs tolerance {tolerance:.4f}, McNemar p={p:.3g}"
    return CheckResult("accuracy_gap", outcome, n, gap, p, reason, detail)


def agreement_p_value(agree: int, n: int, floor: float) -> float:
    """One-sided p-value for "champion and shadow agree less often than ``floor``" when
    ``agree`` of ``n`` pairs agreed (exact binomial test)."""
    from scipy import stats

    if floor <= 0:
        return 1.0
    return float(stats.binomtest(agree, n, floor, alternative="less").pvalue)


def agreement_check(
    champion: ArrayLike, shadow: ArrayLike, *, expected: float | None, config: CheckConfig
) -> CheckResult:
    """Fail when champion/shadow agreement is significantly below the offline agreement
    (``metrics.agreement_with_baseline``) minus ``agreement_margin`` (one-sided binomial)."""
    champ, shad = np.asarray(champion), np.asarray(shadow)
    n = int(champ.size)
    if expected is None or not math.isfinite(expected):
        return inconclusive("agreement", n, "the manifest has no metrics.agreement_with_baseline")
    if n < config.min_pairs:
        return inconclusive("agreement", n, f"{n} pairs < min_pairs={config.min_pairs}")
    agree = int(np.sum(champ == shad))
    floor = max(expected - config.agreement_margin, 0.0)
    ratio = agree / n
    p = agreement_p_value(agree, n, floor)
    outcome = FAIL if p < config.alpha else PASS if ratio >= floor else INCONCLUSIVE
    reason = f"agreement {ratio:.4f} vs floor {floor:.4f} (offline {expected:.4f}), p={p:.3g}"
    detail = {"expected": expected, "floor": floor, "agree": agree, "alpha": config.alpha}
    return CheckResult("agreement", outcome, n, ratio, p, reason, detail)


def mean_check(
    name: str,
    values: ArrayLike,
    *,
    expected: float | None,
    bound: float,
    higher_is_worse: bool,
    config: CheckConfig,
    source: str,
) -> CheckResult:
    """Fail when the mean of per-request ``values`` is significantly worse than the offline
    ``expected`` by more than ``bound`` (one-sided t-test): below ``expected − bound``, or
    above ``expected + bound`` when ``higher_is_worse``."""
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    if expected is None or not math.isfinite(expected):
        return inconclusive(name, n, f"the manifest has no {source}")
    if n < config.min_pairs:
        return inconclusive(name, n, f"{n} pairs < min_pairs={config.min_pairs}")
    sign = -1.0 if higher_is_worse else 1.0  # the test is on "lower is worse"
    limit = expected + bound if higher_is_worse else expected - bound
    mean, sd = float(data.mean()), float(data.std(ddof=1))
    if sd == 0.0:
        p = 0.0 if sign * (mean - limit) < 0 else 1.0
    else:
        p = float(stats.t.cdf(sign * (mean - limit) / (sd / math.sqrt(n)), df=n - 1))
    within = sign * (mean - limit) >= 0
    outcome = FAIL if p < config.alpha else PASS if within else INCONCLUSIVE
    word = "ceiling" if higher_is_worse else "floor"
    reason = f"mean {name} {mean:.4f} vs {word} {limit:.4f} (offline {expected:.4f}), p={p:.3g}"
    detail = {"expected": expected, word: limit, "std": sd, "alpha": config.alpha}
    return CheckResult(name, outcome, n, mean, p, reason, detail)


def cosine_check(cosines: ArrayLike, *, expected: float | None, config: CheckConfig) -> CheckResult:
    """Embeddings: fail when the mean champion/shadow cosine is significantly below the
    offline value (``metrics.mean_cosine_to_dense``) minus ``cosine_margin`` (one-sided
    t-test on the per-request cosines)."""
    return mean_check(
        "cosine", cosines, expected=expected, bound=config.cosine_margin,
        higher_is_worse=False, config=config, source="metrics.mean_cosine_to_dense",
    )  # fmt: skip


def token_checks(
    agreement: ArrayLike,
    gap: ArrayLike,
    *,
    expected_agreement: float | None,
    expected_gap: float | None,
    config: CheckConfig,
) -> tuple[CheckResult, CheckResult]:
    """Decoders: the dense shadow scores each request's generated tokens by teacher forcing
    (:func:`registry.tasks.score_tokens`); per request, the share it ranks first and the
    mean log-prob gap. Fail when the window's agreement is significantly below the offline
    value (``metrics.shadow_token_agreement``) minus ``token_agreement_margin``, or its gap
    significantly above ``metrics.shadow_logprob_gap`` plus ``logprob_gap_margin``."""
    return (
        mean_check(
            "token_agreement", agreement, expected=expected_agreement,
            bound=config.token_agreement_margin, higher_is_worse=False, config=config,
            source="metrics.shadow_token_agreement",
        ),
        mean_check(
            "logprob_gap", gap, expected=expected_gap, bound=config.logprob_gap_margin,
            higher_is_worse=True, config=config, source="metrics.shadow_logprob_gap",
        ),
    )  # fmt: skip


def drift_check(
    share: float, detected: bool, samples: int, *, min_p: float | None, config: CheckConfig
) -> CheckResult:
    """Informational: drift is reported and exported, never a reason to roll back by itself."""
    if samples < config.min_drift_rows:
        return inconclusive(
            "drift", samples, f"{samples} rows < min_drift_rows={config.min_drift_rows}"
        )
    outcome = FAIL if detected else PASS
    reason = f"drift share {share:.3f} (Holm-corrected at alpha={config.drift_alpha})"
    return CheckResult("drift", outcome, samples, share, min_p, reason)
