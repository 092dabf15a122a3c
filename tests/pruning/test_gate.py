"""The acceptance gate: a pruned version becomes champion only within the accuracy budget of
its dense parent and faster than it as served; otherwise it is registered, not promoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pruneguard.pruning.cli import prune
from pruneguard.pruning.gate import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MIN_SPEEDUP, decide
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.registry.cli import models
from pruneguard.registry.errors import ConfigError

SETUP = {"ort_threads": 1}


def _metrics(accuracy: float = 0.98, speedup: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "accuracy": accuracy,
        "baseline_accuracy": 0.99,
        "speedup": speedup or {"1": 1.8, "8": 2.1},
        "latency_setup": SETUP,
    }


def test_within_budget_and_faster_passes_under_the_default_budget() -> None:
    verdict = decide(_metrics())
    assert verdict.passed and verdict.reasons == ()
    assert verdict.budget == "default"
    assert (verdict.max_accuracy_drop, verdict.min_speedup) == (
        DEFAULT_MAX_ACCURACY_DROP,
        DEFAULT_MIN_SPEEDUP,
    )
    assert "default budget" in verdict.reason


def test_a_slower_version_is_refused_per_batch_size() -> None:
    # the figures of a one-shot 0.3 cut with one epoch, as a new user met them
    verdict = decide(_metrics(accuracy=0.951, speedup={"1": 0.78, "8": 1.02}))
    assert not verdict.passed
    assert len(verdict.reasons) == 2
    assert verdict.reasons[0].startswith("accuracy 0.9510 is 3.90 points below the dense 0.9900")
    assert verdict.reasons[1] == (
        "0.78× the dense speed at batch 1 as served, 1 ORT thread; accept.min_speedup is 1.00×"
    )
    assert "batch 8" not in verdict.reason


def test_the_recipe_budget_replaces_the_default() -> None:
    metrics = _metrics(accuracy=0.96, speedup={"1": 1.1})
    assert not decide(metrics).passed
    lenient = decide(metrics, max_accuracy_drop=0.05, min_speedup=None)
    assert lenient.passed and lenient.budget == "recipe" and lenient.min_speedup == 1.0
    strict = decide(metrics, max_accuracy_drop=0.05, min_speedup=1.5)
    assert not strict.passed and "accept.min_speedup is 1.50×" in strict.reason
    assert decide({**metrics, "accuracy": 0.98}, max_accuracy_drop=0.01).passed  # exactly 1 point


def test_recipe_accepts_min_speedup_and_refuses_bad_values() -> None:
    base = {"name": "x", "model": {"builtin": "digits-cnn"}, "data": {"builtin": "digits"},
            "method": "channel", "target": {"ratio": 0.5}}  # fmt: skip
    recipe = parse_recipe({**base, "accept": {"min_speedup": 1.2}})
    assert recipe.accept is not None and recipe.accept.max_accuracy_drop is None
    verdict = recipe.acceptance(_metrics(speedup={"1": 1.1}))
    assert not verdict["passed"] and verdict["budget"] == "recipe"
    with pytest.raises(ConfigError, match=r"accept\.min_speedup=0\.0: must be > 0"):
        parse_recipe({**base, "accept": {"min_speedup": 0}})


# --- through the CLI, with a real registry --------------------------------------------------

RECIPE = """
name: gated
model: {builtin: digits-cnn, options: {width: 8}}
data: {builtin: digits}
train: {epochs: 2, lr: 0.01}
method: channel
criterion: l2
target: {ratio: 0.5}
finetune: {epochs: 2, lr: 0.005}
export: {batch_sizes: [1, 4], latency_blocks: 2, latency_runs: 3}
"""


def _prune(tmp_path: Path, accept: str, out: str, *args: str) -> Result:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE + accept)
    argv = [str(recipe), "--out", str(tmp_path / out), "--register", "--json", "--quiet", *args]
    return CliRunner().invoke(prune, argv)


def _models(*args: str) -> Result:
    return CliRunner().invoke(models, list(args))


@pytest.mark.slow
def test_a_slower_version_is_registered_not_champion_until_overridden(
    tmp_path: Path, pruneguard_home: Path
) -> None:
    # min_speedup 50: no width-8 CNN is 50× faster than its parent, so the measured speed-ups
    # miss it at every batch size
    slow = "accept: {max_accuracy_drop: 0.5, min_speedup: 50}\n"
    refused = _prune(tmp_path, slow, "a")
    assert refused.exit_code == 1, refused.output
    assert "NOT accepted:" in refused.stderr and "accept.min_speedup is 50.00×" in refused.stderr
    printed = json.loads(refused.stdout)
    block = printed["registration"]
    assert block["accepted"] is False and block["promoted"] is False and not block["override"]
    assert block["pruned"]["aliases"] == []
    assert block["dense"]["aliases"] == ["baseline", "champion"]  # the dense parent serves
    assert block["reason"] == printed["pruning"]["acceptance"]["reason"]
    history = json.loads(_models("history", "gated", "--json").stdout)
    (verdict,) = [e for e in history if e["action"] == "refused"]
    assert verdict["to_version"] == block["pruned"]["tag"]
    assert "accept.min_speedup is 50.00×" in verdict["reason"]
    assert verdict["evidence"]["acceptance"]["passed"] is False

    forced = _prune(tmp_path, slow, "b", "--promote", "always")
    assert forced.exit_code == 0, forced.output
    block = json.loads(forced.stdout)["registration"]
    assert block["override"] is True and block["promoted"] is True
    assert block["pruned"]["aliases"] == ["champion"]
    history = json.loads(_models("history", "gated", "--json").stdout)
    override = history[-1]
    assert (override["action"], override["alias"]) == ("promote", "champion")
    assert override["to_version"] == block["pruned"]["tag"]
    assert override["reason"].startswith("override (--promote always): ")


@pytest.mark.slow
def test_the_json_names_the_tags_a_script_promotes(tmp_path: Path, pruneguard_home: Path) -> None:
    lenient = "accept: {max_accuracy_drop: 0.5, min_speedup: 0.1}\n"
    done = _prune(tmp_path, lenient, "a", "--promote", "never")
    assert done.exit_code == 0, done.output
    block = json.loads(done.stdout)["registration"]
    assert block["accepted"] is True and block["promoted"] is False
    assert block["dense"]["aliases"] == block["pruned"]["aliases"] == []
    tag = block["pruned"]["tag"]

    moved = _models("promote", tag, "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["changed"] is True
    aliases = json.loads(_models("list", "gated", "--json").stdout)
    assert next(v for v in aliases if v["tag"] == tag)["aliases"] == ["champion"]

    events = len(json.loads(_models("history", "gated", "--json").stdout))
    again = _models("promote", tag)
    assert again.exit_code == 0, again.output
    assert "already champion of gated; nothing changed" in again.stdout
    assert len(json.loads(_models("history", "gated", "--json").stdout)) == events  # no event
