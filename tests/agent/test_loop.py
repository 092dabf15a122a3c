"""Agent.tick against a real registry (SQLite and PostgreSQL, BentoML store) and the real
prediction log."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_env import FAST, MODEL, Env, make_env, value, write_traffic

from pruneguard.agent.analysis import Analysis
from pruneguard.agent.loop import Agent, replace_config
from pruneguard.agent.policy import Decision, Phase, PolicyState


@pytest.fixture
def env(pruneguard_home: Path, artifact_factory: Any, db_url: str | None) -> Iterator[Env]:
    made = make_env(pruneguard_home, artifact_factory, db_url)
    yield made
    made.registry.close()


def test_worse_champion_is_rolled_back_with_evidence(env: Env) -> None:
    agent = Agent(env.registry, config=FAST, actor="agent:test:1")
    write_traffic(env, 300, rng=np.random.default_rng(0), labels="shadow")
    first = agent.tick(MODEL)
    assert first.decision.action == "none" and first.state.phase == Phase.FAILING
    checks = {c.name: c for c in first.analysis.checks}
    assert checks["accuracy_gap"].outcome == "fail" and checks["accuracy_gap"].samples == 300
    assert value(agent, "pruneguard_agent_failed_checks") == 1
    assert value(agent, "pruneguard_accuracy", variant="shadow") == 1.0
    assert value(agent, "pruneguard_accuracy_gap") > 0.5

    second = agent.tick(MODEL)
    assert second.decision.action == "rollback"
    assert second.rollback is not None and second.rollback["result"] == "done"
    assert env.registry.resolve(MODEL, "champion") == env.shadow
    event = env.registry.history(MODEL)[-1]
    assert (event.action, event.actor, event.from_version, event.to_version) == (
        "rollback",
        "agent:test:1",
        env.champion,
        env.shadow,
    )
    assert {c["name"] for c in event.evidence["checks"]} == {"accuracy_gap", "agreement", "drift"}
    assert event.evidence["decision"]["action"] == "rollback"
    assert value(agent, "pruneguard_rollbacks_total", trigger="checks") == 1
    assert value(agent, "pruneguard_rollbacks_total", trigger="alert") == 0
    assert value(agent, "pruneguard_agent_analysis_status") == 4  # cooldown

    # The new champion has no traffic of its own yet: nothing counted, no second rollback.
    third = agent.tick(MODEL)
    assert third.decision.action == "none" and third.analysis.samples["rows"] == 0


def test_healthy_champion_stays(env: Env) -> None:
    agent = Agent(env.registry, config=FAST)
    write_traffic(env, 300, rng=np.random.default_rng(1), labels="champion")
    for _ in range(4):
        result = agent.tick(MODEL)
        assert result.decision.action == "none"
    assert result.state.phase == Phase.HEALTHY
    assert env.registry.resolve(MODEL, "champion") == env.champion


def test_too_few_labels_is_inconclusive_not_failing(env: Env) -> None:
    agent = Agent(env.registry, config=FAST)
    write_traffic(env, 40, rng=np.random.default_rng(2), labels="shadow")
    for _ in range(5):
        result = agent.tick(MODEL)
    outcomes = {c.name: c.outcome for c in result.analysis.checks}
    assert outcomes == {
        "accuracy_gap": "inconclusive",
        "agreement": "inconclusive",
        "drift": "inconclusive",
    }
    assert result.state.streak == 0 and result.state.phase == Phase.IDLE
    assert math.isnan(value(agent, "pruneguard_drift_share"))
    assert value(agent, "pruneguard_window_samples", kind="labelled") == 40


def test_database_outage_is_inconclusive_and_never_rolls_back(env: Env) -> None:
    import sqlalchemy as sa

    agent = Agent(env.registry, config=replace_config(FAST, threshold=3))
    write_traffic(env, 300, rng=np.random.default_rng(3), labels="shadow")
    assert agent.tick(MODEL).state.streak == 1
    assert agent.tick(MODEL).state.streak == 2
    live = env.registry.engine
    env.registry.engine = sa.create_engine("postgresql+psycopg://x:y@127.0.0.1:1/down")  # refused
    try:
        for _ in range(3):
            down = agent.tick(MODEL)
            assert down.lease is None and down.decision.action == "none"
            assert {c.outcome for c in down.analysis.checks} == {"inconclusive"}
            assert down.state.streak == 2
    finally:
        env.registry.engine.dispose()
        env.registry.engine = live
    assert agent.tick(MODEL).decision.action == "rollback"  # the third *conclusive* failure


def test_only_the_lease_holder_acts(env: Env) -> None:
    config = replace_config(FAST, threshold=1)
    first = Agent(env.registry, config=config, actor="agent:a:1")
    second = Agent(env.registry, config=config, actor="agent:b:2")
    write_traffic(env, 300, rng=np.random.default_rng(4), labels="champion")
    assert first.tick(MODEL).lease is True
    write_traffic(env, 300, rng=np.random.default_rng(5), labels="shadow")
    standby = second.tick(MODEL)
    assert standby.lease is False and standby.decision.action == "none"
    assert env.registry.resolve(MODEL, "champion") == env.champion


def test_conflict_when_someone_else_moved_the_champion(env: Env) -> None:
    agent = Agent(env.registry, config=FAST)
    agent.metrics.declare(MODEL)
    # the agent analysed `champion`, then a person rolled back by hand before it acted
    env.registry.rollback(MODEL, actor="cli:person", reason="by hand", expected=env.champion)
    stale = Analysis(MODEL, env.champion, env.shadow, ())
    state, outcome = agent._roll_back(
        MODEL,
        PolicyState(phase=Phase.ROLLING_BACK, streak=2),
        Decision("rollback", "test"),
        stale,
        0.0,
    )
    assert outcome["result"] == "conflict" and state.phase == Phase.COOLDOWN
    assert env.registry.history(MODEL)[-1].actor == "cli:person"
    assert value(agent, "pruneguard_rollbacks_total", trigger="checks") == 0


def test_shifted_inputs_are_detected_and_exported(env: Env) -> None:
    agent = Agent(env.registry, config=FAST)
    write_traffic(env, 200, rng=np.random.default_rng(6), labels="champion")
    calm = agent.tick(MODEL)
    assert calm.analysis.drift is not None
    feature_drift = [
        c for c in calm.analysis.drift.columns if c.drifted and c.column != "prediction"
    ]
    assert feature_drift == []
    write_traffic(env, 1000, rng=np.random.default_rng(7), labels="none", shift=3.0)
    shifted = agent.tick(MODEL)
    assert shifted.analysis.drift is not None and shifted.analysis.drift.detected
    assert "c0_mean" in shifted.analysis.drift.to_dict()["drifted_columns"]
    assert value(agent, "pruneguard_drift_detected") == 1
    assert value(agent, "pruneguard_drift_share") == shifted.analysis.drift.share > 0.3


def test_no_ping_pong_back_to_a_version_the_agent_rolled_back_from(
    env: Env, artifact_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent rolled the pruned version back; a person promoted it again, then a third
    version. When the third fails, the registry's rollback target is the pruned version
    again: the agent holds (no event, a log line, a counter) instead of putting it back."""
    reg, pruned = env.registry, env.champion
    reg.rollback(MODEL, actor="agent:earlier:7", reason="accuracy fell", expected=pruned)
    reg.promote(pruned, actor="cli:person", reason="retry it")
    third = reg.register(artifact_factory(name=MODEL, kind="pruned", seed=3), actor="test").tag
    reg.promote(third, actor="cli:person", reason="a new prune")
    env.champion = third  # shadow: still the dense version
    events = len(reg.history(MODEL))
    write_traffic(env, 200, rng=np.random.default_rng(8), labels="shadow")

    agent = Agent(reg, config=replace_config(FAST, threshold=1), actor="agent:test:2")
    with caplog.at_level(logging.WARNING, logger="pruneguard.agent"):
        held = agent.tick(MODEL)
    assert held.analysis.champion == third and held.decision.verdict == "fail"
    out = held.to_dict()["decision"]
    assert (out["action"], out["guard"], out["target"]) == ("hold", "flap_target", pruned)
    assert held.rollback is None and held.state.phase == Phase.FAILING
    assert reg.resolve(MODEL, "champion") == third and len(reg.history(MODEL)) == events
    assert any("held" in r.message and pruned in r.message for r in caplog.records)
    assert value(agent, "pruneguard_agent_rollbacks_held_total", guard="flap_target") == 1
    assert value(agent, "pruneguard_rollbacks_total", trigger="checks") == 0
    assert agent.tick(MODEL).decision.guard == "flap_target"  # still held, never acted on

    # Once the flap window has passed, the same rollback goes through.
    later = Agent(
        reg,
        config=replace_config(FAST, threshold=1, window_s=3 * 3600.0),
        actor="agent:test:2",
        clock=lambda: held.ts + FAST.policy.flap_window_s + 1,
    )
    done = later.tick(MODEL)
    assert done.decision.action == "rollback" and done.decision.target == pruned
    assert done.rollback is not None and done.rollback["result"] == "done"
    assert reg.resolve(MODEL, "champion") == pruned


@pytest.mark.parametrize(
    "db_url", ["sqlite"], indirect=True
)  # the registry part runs on both above
def test_flap_limit_counts_the_history_so_a_restart_does_not_reset_it(env: Env) -> None:
    """Two automatic rollbacks in the last hour (by an agent that has since restarted): a new
    agent process, with nothing in memory, holds the third."""
    reg, pruned = env.registry, env.champion
    for _ in range(2):
        reg.rollback(MODEL, actor="agent:before-restart:1", reason="accuracy fell")
        reg.promote(pruned, actor="cli:person", reason="try again")
    write_traffic(env, 200, rng=np.random.default_rng(9), labels="shadow")
    agent = Agent(reg, config=replace_config(FAST, threshold=1))
    held = agent.tick(MODEL)
    assert (held.decision.action, held.decision.guard) == ("hold", "flap_limit")
    assert reg.resolve(MODEL, "champion") == pruned and held.rollback is None
    assert value(agent, "pruneguard_agent_rollbacks_held_total", guard="flap_limit") == 1
