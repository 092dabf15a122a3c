"""The rollback policy: table-driven rules, hypothesis properties, and long simulations that
feed simulated windows through the real checks into the real policy."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from agent_sim import Traffic, run_ticks
from hypothesis import given, settings
from hypothesis import strategies as st

from pruneguard.agent.checks import CheckConfig, mcnemar_p_value
from pruneguard.agent.policy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    CheckResult,
    Decision,
    Phase,
    PolicyConfig,
    PolicyState,
    after_rollback,
    decide,
    guard_history,
    guard_target,
    observe_champion,
    request_rollback,
    verdict,
)
from pruneguard.registry.errors import ConfigError

CONFIG = PolicyConfig(threshold=3, cooldown_s=300.0, flap_limit=2, flap_window_s=3600.0)
CHECKS = CheckConfig(min_labelled_pairs=300, min_pairs=300)


def tick(outcome: str, name: str = "accuracy_gap") -> list[CheckResult]:
    return [CheckResult(name, outcome, 500)]


def play(outcomes: list[str], config: PolicyConfig = CONFIG, interval: float = 30.0):
    state, decisions = PolicyState(champion="m:a"), []
    for i, outcome in enumerate(outcomes):
        state, decision = decide(state, tick(outcome), i * interval, config)
        decisions.append(decision.action)
        if decision.action == "rollback":
            state = after_rollback(state, i * interval, "done", config)
    return state, decisions


@pytest.mark.parametrize(
    ("outcomes", "actions", "phase"),
    [
        (["pass"] * 5, ["none"] * 5, Phase.HEALTHY),
        (["fail", "fail"], ["none", "none"], Phase.FAILING),
        (["fail", "fail", "fail"], ["none", "none", "rollback"], Phase.COOLDOWN),
        # a pass resets the streak
        (["fail", "fail", "pass", "fail", "fail"], ["none"] * 5, Phase.FAILING),
        # inconclusive neither counts nor resets: the third *conclusive* failure rolls back
        (
            ["fail", "inconclusive", "fail", "inconclusive", "fail"],
            [*["none"] * 4, "rollback"],
            Phase.COOLDOWN,
        ),
        (["inconclusive"] * 50, ["none"] * 50, Phase.IDLE),
        (["pass", "inconclusive"], ["none", "none"], Phase.HEALTHY),
    ],
)
def test_policy_table(outcomes: list[str], actions: list[str], phase: Phase) -> None:
    state, decisions = play(outcomes)
    assert decisions == actions
    assert state.phase == phase


def test_cooldown_counts_nothing_then_resumes() -> None:
    # rollback at t=60; cooldown 300 s: ticks at 90..330 are not counted even when failing
    _state, decisions = play(["fail"] * 3 + ["fail"] * 9 + ["fail"] * 3)
    assert decisions[:3] == ["none", "none", "rollback"]
    assert decisions[3:12] == ["none"] * 9  # t = 90 .. 330 < 60 + 300
    assert decisions[12:] == ["none", "none", "rollback"]  # counted again from t = 360


def test_flap_guard_holds_after_flap_limit_rollbacks() -> None:
    config = dataclasses.replace(CONFIG, cooldown_s=0.0)
    _, decisions = play(["fail"] * 9, config)
    assert decisions.count("rollback") == 2
    assert decisions[-1] == "hold"


def test_rolling_back_phase_holds_further_decisions() -> None:
    state, decision = decide(PolicyState(streak=2), tick(FAIL), 0.0, CONFIG)
    assert decision.action == "rollback" and state.phase == Phase.ROLLING_BACK
    again, second = decide(state, tick(FAIL), 1.0, CONFIG)
    assert second.action == "hold" and again == state


def test_failed_rollback_retries_on_fresh_evidence_only() -> None:
    state, _ = decide(PolicyState(streak=2), tick(FAIL), 0.0, CONFIG)
    state = after_rollback(state, 0.0, "failed", CONFIG)
    assert state.phase == Phase.FAILING
    _, inconclusive = decide(state, tick(INCONCLUSIVE), 30.0, CONFIG)
    assert inconclusive.action == "none"
    _, fail = decide(state, tick(FAIL), 30.0, CONFIG)
    assert fail.action == "rollback"


def test_conflict_starts_a_cooldown_without_counting_a_rollback() -> None:
    state = after_rollback(PolicyState(streak=3), 10.0, "conflict", CONFIG)
    assert state.phase == Phase.COOLDOWN and state.rollback_times == ()
    assert state.cooldown_until == 310.0


def test_new_champion_resets_the_streak() -> None:
    state = observe_champion(PolicyState(champion="m:a", streak=2, phase=Phase.FAILING), "m:b")
    assert state.streak == 0 and state.phase == Phase.IDLE and state.champion == "m:b"


def test_gate_order_labelled_accuracy_outranks_agreement() -> None:
    checks = [
        CheckResult("agreement", FAIL, 900),
        CheckResult("accuracy_gap", PASS, 400),
        CheckResult("drift", FAIL, 900),
    ]
    assert verdict(checks, CONFIG.gate_order) == (PASS, "accuracy_gap")
    checks[1] = CheckResult("accuracy_gap", INCONCLUSIVE, 10)
    assert verdict(checks, CONFIG.gate_order) == (FAIL, "agreement")
    assert verdict([CheckResult("drift", FAIL, 900)], CONFIG.gate_order) == (INCONCLUSIVE, None)


def test_alert_request_obeys_cooldown_and_flap_guard() -> None:
    state, decision = request_rollback(PolicyState(), 0.0, CONFIG, "HighErrorRate")
    assert decision.action == "rollback" and decision.trigger == "alert"
    cooled = after_rollback(state, 0.0, "done", CONFIG)
    _, during = request_rollback(cooled, 10.0, CONFIG, "again")
    assert during.action == "none" and "cooldown" in during.reason


def test_bad_config_names_the_value() -> None:
    with pytest.raises(ConfigError, match="threshold is 0"):
        PolicyConfig(threshold=0)
    with pytest.raises(ConfigError, match="'maybe'"):
        CheckResult("x", "maybe", 1)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([PASS, FAIL, INCONCLUSIVE]), max_size=60))
def test_inconclusive_never_counts_as_a_failure(outcomes: list[str]) -> None:
    """Inserting inconclusive ticks anywhere changes nothing but the timing."""
    _, with_gaps = play(
        [o for outcome in outcomes for o in (outcome, INCONCLUSIVE)],
        dataclasses.replace(CONFIG, cooldown_s=0.0),
    )
    _, without = play(outcomes, dataclasses.replace(CONFIG, cooldown_s=0.0))
    assert [a for a in with_gaps[::2]] == without
    assert all(a == "none" for a in with_gaps[1::2])
    _, only = play([INCONCLUSIVE] * len(outcomes))
    assert set(only) <= {"none"}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([PASS, FAIL, INCONCLUSIVE]), max_size=80))
def test_rollback_needs_threshold_consecutive_conclusive_failures(outcomes: list[str]) -> None:
    _, actions = play(outcomes)
    for i, action in enumerate(actions):
        if action == "rollback":
            conclusive = [o for o in outcomes[: i + 1] if o != INCONCLUSIVE]
            assert conclusive[-CONFIG.threshold :] == [FAIL] * CONFIG.threshold


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([PASS, FAIL, INCONCLUSIVE]), max_size=80))
def test_no_flapping(outcomes: list[str]) -> None:
    """Two rollbacks are at least a cooldown apart, and never more than flap_limit per window."""
    _, actions = play(outcomes, interval=30.0)
    times = [i * 30.0 for i, a in enumerate(actions) if a == "rollback"]
    assert all(b - a >= CONFIG.cooldown_s for a, b in itertools.pairwise(times))
    for t in times:
        assert sum(1 for u in times if t <= u < t + CONFIG.flap_window_s) <= CONFIG.flap_limit


# --- real checks on simulated windows -----------------------------------------------------


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    shadow_accuracy=st.floats(0.80, 0.99),
    gap=st.floats(-0.02, 0.01),
    pairs=st.integers(20, 1500),
    labelled_share=st.floats(0.0, 1.0),
)
def test_no_rollback_on_stationary_noisy_traffic(
    seed: int, shadow_accuracy: float, gap: float, pairs: int, labelled_share: float
) -> None:
    """1,000 ticks of traffic as good as the offline figures (gap <= the manifest's 0.01)."""
    traffic = Traffic(shadow_accuracy, shadow_accuracy - gap, pairs, labelled_share)
    rng = np.random.default_rng(seed)
    ticks = run_ticks(rng, [traffic] * 1000, checks=CHECKS, policy=CONFIG)
    assert [d.action for _, d in ticks].count("rollback") == 0


def test_stationary_traffic_with_varying_volume_never_rolls_back() -> None:
    rng = np.random.default_rng(7)
    traffics = [Traffic(0.96, 0.95, int(n)) for n in rng.integers(0, 3000, 1500)]
    ticks = run_ticks(rng, traffics, checks=CHECKS, policy=CONFIG)
    assert all(d.action == "none" for _, d in ticks)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0.05, 0.20),
    pairs=st.integers(500, 3000),
    threshold=st.integers(1, 5),
)
def test_a_five_point_drop_rolls_back_after_threshold_failing_ticks(
    seed: int, drop: float, pairs: int, threshold: int
) -> None:
    """Champion 5+ points below its offline accuracy, windows with >= 500 labelled pairs:
    no window ever passes, so the rollback comes on the threshold-th failing tick."""
    policy = dataclasses.replace(CONFIG, threshold=threshold)
    rng = np.random.default_rng(seed)
    ticks = run_ticks(rng, [Traffic(0.96, 0.95 - drop, pairs)] * 30, checks=CHECKS, policy=policy)
    actions = [d.action for _, d in ticks]
    first = actions.index("rollback")
    verdicts = [d.verdict for _, d in ticks[: first + 1]]
    assert PASS not in verdicts
    assert verdicts.count(FAIL) == threshold


@pytest.mark.parametrize("seed", range(5))
def test_a_five_point_drop_rolls_back_within_threshold_ticks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    warmup = [Traffic(0.96, 0.95, 100)] * 3  # too few samples: inconclusive
    drop = [Traffic(0.96, 0.90, 1000)] * CONFIG.threshold
    ticks = run_ticks(rng, warmup + drop, checks=CHECKS, policy=CONFIG)
    assert [d.verdict for _, d in ticks[:3]] == [INCONCLUSIVE] * 3
    assert [d.action for _, d in ticks] == ["none"] * 5 + ["rollback"]


def test_mcnemar_matches_the_classic_test_and_its_approximation() -> None:
    from scipy import stats

    assert mcnemar_p_value(5, 15, 100) == pytest.approx(
        stats.binomtest(15, 20, 0.5, alternative="greater").pvalue
    )
    assert mcnemar_p_value(10, 10, 100) > 0.5
    assert mcnemar_p_value(0, 0, 100) == 1.0
    exact = mcnemar_p_value(400, 520, 5000, 0.01)
    approx = mcnemar_p_value(400, 520, 5000, 0.01, exact=False)
    assert approx == pytest.approx(exact, rel=0.25)
    # with a tolerance the same counts are weaker evidence
    assert mcnemar_p_value(5, 15, 100, tolerance=0.05) > mcnemar_p_value(5, 15, 100)


@pytest.mark.parametrize(
    ("left_at", "target", "action", "guard"),
    [
        ({}, "m:a", "rollback", None),  # never rolled back away from
        ({"m:b": 900.0}, "m:a", "rollback", None),  # another version
        ({"m:a": 900.0}, "m:a", "hold", "flap_target"),  # 100 s ago: ping-pong
        ({"m:a": 1000.0 - 3600.0}, "m:a", "rollback", None),  # a flap window ago
        ({"m:a": 900.0}, None, "rollback", None),  # target unknown: the registry decides
    ],
)
def test_guard_target_refuses_a_version_rolled_back_from_within_the_flap_window(
    left_at: dict[str, float], target: str | None, action: str, guard: str | None
) -> None:
    rolling = PolicyState(phase=Phase.ROLLING_BACK, streak=3, champion="m:c")
    state, decision = guard_target(
        rolling, Decision("rollback", "3 failing ticks"), target, left_at, 1000.0, CONFIG
    )
    assert (decision.action, decision.guard, decision.target) == (action, guard, target)
    assert state.phase == (Phase.FAILING if action == "hold" else Phase.ROLLING_BACK)
    if action == "hold":
        assert "m:a" in decision.reason and "--to" in decision.reason
        assert state.streak == 3  # still failing: a person must choose a version


def test_guard_target_leaves_other_decisions_alone() -> None:
    for decision in (Decision("none", "pass"), Decision("hold", "flap", guard="flap_limit")):
        assert (
            guard_target(PolicyState(), decision, "m:a", {"m:a": 0.0}, 1.0, CONFIG)[1] == decision
        )


@pytest.mark.parametrize(
    ("rolled_back_at", "action"),
    [
        ([], "rollback"),
        ([900.0], "rollback"),  # one in the window: flap_limit is 2
        ([100.0, 900.0], "hold"),  # two in the window (e.g. before this agent restarted)
        ([1000.0 - 3600.0, 900.0], "rollback"),  # one of them a flap window ago
    ],
)
def test_guard_history_applies_the_flap_limit_to_the_registrys_history(
    rolled_back_at: list[float], action: str
) -> None:
    rolling = PolicyState(phase=Phase.ROLLING_BACK, streak=3)
    state, decision = guard_history(
        rolling, Decision("rollback", "3 failing ticks"), rolled_back_at, 1000.0, CONFIG
    )
    assert decision.action == action
    if action == "hold":
        assert decision.guard == "flap_limit" and state.phase == Phase.FAILING
        assert "flap_limit=2" in decision.reason
    else:
        assert (state, decision) == (rolling, Decision("rollback", "3 failing ticks"))
