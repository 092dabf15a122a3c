"""``python -m pruneguard.demo --quick``: the whole loop, run as a user runs it.

A real prune run, a real registry, a real ``pruneguard serve`` and a real ``pruneguard agent
run`` process; the agent must roll the pruned champion back by itself, and the history must
say so. Pure helpers (the shift choice) are tested directly below.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pruneguard import demo

PRUNEGUARD = str(Path(sys.executable).parent / "pruneguard")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNEGUARD_DB_URL", "BENTOML_HOME")}
    return {**env, "HF_HUB_OFFLINE": "1"}  # the text demo's encoder ships in a package


def _run_demo(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The demo as a user runs it; it must close the loop and say so."""
    done = subprocess.run(
        [sys.executable, "-m", "pruneguard.demo", "--quick", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,  # a hang guard, not a speed target
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "ROLLBACK by agent:" in done.stdout
    assert "the loop closed" in done.stdout
    return done


def _agent_rollback(home: Path) -> dict[str, Any]:
    """The one rollback in the registry's history: by the agent, back to the dense version."""
    history = subprocess.run(
        [PRUNEGUARD, "models", "history", "--all", "--json", "--home", str(home)],
        capture_output=True,
        text=True,
        env={**_env(), "BENTOML_HOME": str(home / "bentoml")},
        check=True,
    )
    rollbacks = [e for e in json.loads(history.stdout) if e["action"] == "rollback"]
    assert len(rollbacks) == 1
    event: dict[str, Any] = rollbacks[0]
    assert event["actor"].startswith("agent:")
    assert event["alias"] == "champion"
    assert event["to_version"].endswith(_version(home, "dense"))
    decision = event["evidence"]["decision"]
    assert decision["verdict"] == "fail" and decision["failing"]
    return event


@pytest.mark.slow
def test_quick_demo_closes_the_loop(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    done = _run_demo(home, timeout=900)
    event = _agent_rollback(home)
    # the agent decided on failing checks (paired accuracy, or label-free agreement when the
    # window's accuracy test is not yet conclusive), and the pruned champion did trail
    gap = next(c for c in event["evidence"]["checks"] if c["name"] == "accuracy_gap")
    assert gap["detail"]["shadow_accuracy"] > gap["detail"]["champion_accuracy"]
    env = _env()

    # the commands the demo prints work as typed, from the directory it ran in
    printed = done.stdout.split("=== try it yourself", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in printed if line.strip().startswith("pruneguard models")]
    assert len(commands) == 4, done.stdout[-3000:]
    for command in commands:
        argv = [PRUNEGUARD, *shlex.split(command)[1:]]
        typed = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert typed.returncode == 0 and typed.stdout.strip(), (command, typed.stderr)
    assert "digits-cnn" in typed.stdout  # lineage names the versions

    summary = (home / "summary.html").read_text()
    assert "Rollback timeline" in summary and "ROLLBACK by agent:" in summary
    assert "data:image/png;base64," in summary
    report = next((home / "reports").glob("*/*/report.html"))
    assert report.relative_to(home).as_posix() in summary


@pytest.mark.slow
def test_quick_text_demo_closes_the_loop_on_agreement(tmp_path: Path) -> None:
    """``make demo-text --quick``: the MiniLM topic classifier pruned, served texts; the
    shifted texts go out unlabelled and the agent rolls back on the fall in agreement."""
    home = tmp_path / "demo"
    done = _run_demo(home, "--text", timeout=1800)
    assert "WITHOUT labels" in done.stdout
    event = _agent_rollback(home)
    assert "(agreement)" in event["evidence"]["decision"]["reason"]
    checks = {c["name"]: c for c in event["evidence"]["checks"]}
    assert checks["accuracy_gap"]["outcome"] == "inconclusive"  # no labels in the window
    agreement = checks["agreement"]
    assert agreement["outcome"] == "fail"
    detail = agreement["detail"]
    assert agreement["statistic"] < detail["floor"] < detail["expected"]
    assert agreement["p_value"] < detail["alpha"]
    pruned = json.loads((home / "artifacts" / "pruned" / "manifest.json").read_text())
    assert pruned["io"]["task"] == "classification" and "text" in pruned["io"]
    summary = (home / "summary.html").read_text()
    assert "without labels" in summary and "ROLLBACK by agent:" in summary


@pytest.mark.slow
def test_quick_llm_demo_rolls_back_on_the_shadows_rating(tmp_path: Path) -> None:
    """``make demo-llm --quick``: SmolLM2 with a KV group pruned per layer, served on
    /generate; prompts of the kind measured worst go out and the agent rolls back on the
    dense shadow's rating of the champion's tokens, with no labels."""
    home = tmp_path / "demo"
    done = _run_demo(home, "--llm", timeout=2400)
    assert "kind chosen:" in done.stdout
    event = _agent_rollback(home)
    checks = {c["name"]: c for c in event["evidence"]["checks"]}
    decider = next(n for n in ("logprob_gap", "token_agreement") if f"({n})" in
                   event["evidence"]["decision"]["reason"])  # fmt: skip
    check = checks[decider]
    assert check["outcome"] == "fail" and check["p_value"] < check["detail"]["alpha"]
    if decider == "logprob_gap":  # worse is a larger gap, a smaller agreement
        assert check["statistic"] > check["detail"]["ceiling"] > check["detail"]["expected"]
    else:
        assert check["statistic"] < check["detail"]["floor"] < check["detail"]["expected"]
    pruned = json.loads((home / "artifacts" / "pruned" / "manifest.json").read_text())
    metrics = pruned["metrics"]
    assert metrics["kv_bytes_per_token"] * 3 == metrics["baseline_kv_bytes_per_token"] * 2
    summary = (home / "summary.html").read_text()
    assert "ROLLBACK by agent:" in summary and "Kinds of prompt" in summary


def _version(home: Path, kind: str) -> str:
    """The registry version of an artifact: the first 16 hex digits of its model.onnx sha256."""
    manifest = json.loads((home / "artifacts" / kind / "manifest.json").read_text())
    return str(manifest["files"]["model.onnx"])[:16]


def _result(
    kind: str, strength: float, dense: float, pruned: float, *, both_wrong_ways: int = 0
) -> demo.ShiftResult:
    """1,000 rows; the gap carried by discordant pairs, plus ``both_wrong_ways`` on each side."""
    rows = 1000
    gap = round((dense - pruned) * rows)
    return demo.ShiftResult(
        demo.Shift(kind, strength), dense, pruned, rows,
        dense_only=max(gap, 0) + both_wrong_ways, pruned_only=max(-gap, 0) + both_wrong_ways,
    )  # fmt: skip


def test_choose_shift_takes_the_mildest_clearly_separating_shift() -> None:
    results = [
        _result("noise", 1, 0.98, 0.97),
        _result("noise", 3, 0.80, 0.70),  # first noise strength past 5 points
        _result("noise", 5, 0.60, 0.40),
        _result("dropout", 0.1, 0.95, 0.90, both_wrong_ways=250),  # 5 points, but noise
        _result("dropout", 0.2, 0.90, 0.84),  # milder for the dense model than noise 3: chosen
        _result("blur", 1.0, 0.50, 0.60),
    ]
    chosen, separated = demo.choose_shift(results, demo.Detectable(window_rows=600))
    assert separated
    assert chosen.shift == demo.Shift("dropout", 0.2)


def test_a_gap_drowned_in_discordant_pairs_is_not_detectable() -> None:
    rule = demo.Detectable(window_rows=600, tolerance=0.01, alpha=1e-3)
    assert rule(_result("noise", 2, 0.90, 0.84))
    noisy = _result("noise", 2, 0.90, 0.84, both_wrong_ways=250)
    assert noisy.window_p(600, 0.01) > 0.01 and not rule(noisy)
    assert not rule(_result("noise", 2, 0.90, 0.87))  # 3 points: below min_gap


def test_choose_shift_falls_back_to_the_largest_gap_and_says_so() -> None:
    results = [_result("noise", 1, 0.98, 0.97), _result("blur", 0.5, 0.9, 0.88)]
    chosen, separated = demo.choose_shift(results)
    assert not separated
    assert chosen.shift == demo.Shift("blur", 0.5)


def test_measure_shifts_scores_both_models_on_the_same_rows() -> None:
    class Threshold:
        """A stand-in model: class 1 when the mean pixel exceeds ``cut``."""

        def __init__(self, cut: float) -> None:
            self.cut = cut

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.asarray((x.reshape(len(x), -1).mean(axis=1) > self.cut).astype(int))

    x = np.concatenate([np.full((10, 1, 8, 8), 2.0), np.full((10, 1, 8, 8), 12.0)]).astype(
        np.float32
    )
    y = np.array([0] * 10 + [1] * 10)
    results = demo.measure_shifts({"dense": Threshold(7), "pruned": Threshold(11)}, x, y, draws=2)
    assert {(r.shift.kind, r.shift.strength) for r in results} == {
        (kind, s) for kind, (_, _, strengths) in demo.SHIFTS.items() for s in strengths
    }
    assert all(r.rows == 40 for r in results)
    contrast = next(r for r in results if r.shift == demo.Shift("contrast", 0.8))
    # 12 * 0.8 = 9.6: above the dense model's cut, below the pruned one's
    assert (contrast.dense, contrast.pruned) == (1.0, 0.5)
    assert (contrast.dense_only, contrast.pruned_only) == (20, 0)
    assert contrast.agree == 20 and contrast.agreement == 0.5  # the class-0 rows: both say 0


def _agreeing(kind: str, strength: float, agreement: float, dense: float = 0.9) -> demo.ShiftResult:
    rows = 1000
    return demo.ShiftResult(demo.Shift(kind, strength), dense, dense - 0.01, rows,
                            agree=round(agreement * rows))  # fmt: skip


def test_without_labels_the_shift_is_chosen_by_the_fall_in_agreement() -> None:
    rule = demo.Disagreeing(expected=0.92, window_rows=600)
    results = [
        _agreeing("typos", 0.05, 0.91, dense=0.84),
        _agreeing("typos", 0.2, 0.80, dense=0.70),  # 12 points below offline
        _agreeing("distract", 2, 0.89, dense=0.83),  # 3 points: within the agent's margin
        _agreeing("distract", 8, 0.84, dense=0.80),  # 8 points, milder for the dense model
    ]
    chosen, separated = demo.choose_shift(results, rule)
    assert separated and chosen.shift == demo.Shift("distract", 8)
    # the window test: 0.84 of 600 pairs against a floor of 0.89 is clear; 0.87 is not
    assert rule.p(results[3]) < 1e-3
    assert not rule(_agreeing("distract", 4, 0.87))
    # nothing separates: the largest fall in agreement, whatever the accuracy gap
    weak = [_agreeing("typos", 0.05, 0.91), _agreeing("truncate", 0.5, 0.88)]
    chosen, separated = demo.choose_shift(weak, rule)
    assert not separated and chosen.shift == demo.Shift("truncate", 0.5)


def test_text_shifts_change_texts_more_as_they_grow_stronger() -> None:
    texts = np.asarray(
        ["what is the capital of france", "tell me a joke about computers please"] * 10,
        dtype=object,
    )
    for kind, (_, _, strengths) in demo.TEXT_SHIFTS.items():
        changed = []
        for strength in strengths:
            out = demo.Shift(kind, strength).apply(texts, np.random.default_rng(0))
            assert out.shape == texts.shape and all(isinstance(t, str) and t for t in out)
            changed.append(sum(a != b for a, b in zip(out, texts, strict=True)))
        assert changed[-1] > 0 and changed == sorted(changed), (kind, changed)
    words = demo.Shift("truncate", 0.5).apply(texts[:1], np.random.default_rng(0))[0].split()
    assert words == ["what", "is", "the"]  # 6 words, half cut from the end
    filler = demo.Shift("distract", 4).apply(texts[:1], np.random.default_rng(0))[0]
    assert filler.endswith(str(texts[0])) and len(filler.split()) == 10


def test_shifts_keep_the_pixel_range_and_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 16, size=(5, 1, 8, 8)).astype(np.float32)
    for kind, (_, _, strengths) in demo.SHIFTS.items():
        shifted = demo.Shift(kind, strengths[-1]).apply(x, rng)
        assert shifted.shape == x.shape and shifted.dtype == np.float32
        assert shifted.min() >= 0.0 and shifted.max() <= 16.0


def test_a_foreign_home_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(demo.DemoError, match="not a demo home"):
        demo.prepare_home(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_llm_prompt_kinds_are_drawn_reproducibly_and_the_clearest_kind_is_chosen() -> None:
    from pruneguard.demo.llm import KINDS, KindResult, choose_kind, prompts

    for kind in KINDS:
        assert prompts(kind, 5, seed=1) == prompts(kind, 5, seed=1)
        assert len(set(prompts(kind, 20, seed=1))) > 1
    assert prompts("arithmetic", 3, seed=1) != prompts("arithmetic", 3, seed=2)
    results = [KindResult("a", 12, 0.6, 0.80, 0.3), KindResult("b", 12, 0.5, 1.50, 0.9),
               KindResult("c", 12, 0.7, 0.55, 0.2)]  # fmt: skip
    # offline 0.5 + margin 0.1; z = (gap - 0.6) / (sd / sqrt(24)): a 3.3, b 4.9, c -1.2
    chosen, separated = choose_kind(results, expected_gap=0.5, margin=0.1, window=24)
    assert chosen.kind == "b" and separated
    chosen, separated = choose_kind(results[2:], expected_gap=0.5, margin=0.1, window=24)
    assert chosen.kind == "c" and not separated
