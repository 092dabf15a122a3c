"""The plan's decision table (docs/pruning.md): structure from the deploy target, schedule from the amount."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pruneguard.pruning.advice import advise, advise_recipe, removed_fraction
from pruneguard.pruning.cli import prune
from pruneguard.pruning.recipe import Target, parse_recipe


@pytest.mark.parametrize(
    ("target", "schedule", "steps"),
    [
        (Target("sparsity", 0.2), "one-shot", 1),
        (Target("macs_reduction", 0.29), "one-shot", 1),
        (Target("sparsity", 0.4), "iterative", 2),
        (Target("sparsity", 0.5), "iterative", 2),
        (Target("sparsity", 0.8), "iterative", 4),
        (Target("macs_reduction", 0.7), "iterative", 4),
        (Target("sparsity", 0.95), "iterative", 5),
    ],
)
def test_schedule_follows_the_amount_removed(target: Target, schedule: str, steps: int) -> None:
    method = "channel" if target.kind == "macs_reduction" else "unstructured"
    advice = advise(method, target, "gpu-sparse" if method == "channel" else "cpu")
    assert (advice.schedule, advice.steps) == (schedule, steps)
    assert any(f"{target.value:.0%}" in r for r in advice.reasons)


def test_channel_ratio_counts_both_sides_of_a_conv() -> None:
    # ratio 0.5 removes half the output and half the input channels: ~75% of the weights
    assert removed_fraction(Target("ratio", 0.5)) == pytest.approx(0.75)
    assert advise("channel", Target("ratio", 0.5)).schedule == "iterative"
    assert advise("channel", Target("ratio", 0.1)).schedule == "one-shot"


def test_cpu_recommends_structured_and_warns_about_unstructured() -> None:
    advice = advise("unstructured", Target("sparsity", 0.8), "cpu")
    assert advice.structure == "structured" and advice.method == "channel"
    assert any("latency will not improve" in w for w in advice.warnings)
    assert advise("channel", Target("ratio", 0.3), "cpu").warnings == ()


def test_gpu_sparse_recommends_two_four_for_unstructured() -> None:
    advice = advise("unstructured", Target("sparsity", 0.8), "gpu-sparse")
    assert (advice.structure, advice.method) == ("2:4", "nm")
    assert any("only the 2:4 pattern" in w for w in advice.warnings)
    assert any("above 2:4's fixed 50%" in w for w in advice.warnings)
    assert any("sparse tensor cores" in r for r in advice.reasons)
    nm = advise("nm", Target("sparsity", 0.5), "gpu-sparse")
    assert nm.structure == "2:4" and nm.warnings == ()


def test_structured_stays_structured_on_gpu() -> None:
    advice = advise("head", Target("heads", 0.4), "gpu-sparse")
    assert (advice.structure, advice.method) == ("structured", "head")


def test_layers_iterate_one_per_step() -> None:
    assert (
        advise("layer", Target("layers", 3)).schedule,
        advise("layer", Target("layers", 3)).steps,
    ) == ("iterative", 3)
    assert advise("layer", Target("layers", 1)).schedule == "one-shot"


def test_one_shot_recipe_at_high_amount_gets_a_warning() -> None:
    advice = advise("channel", Target("macs_reduction", 0.7), "cpu", steps=1)
    assert any("schedule: {kind: iterative, steps: 4}" in w for w in advice.warnings)


def test_unknown_deploy_target_is_refused() -> None:
    with pytest.raises(ValueError, match="deploy_target='tpu'"):
        advise("channel", Target("ratio", 0.3), "tpu")


def test_plan_cli_prints_advice_and_json() -> None:
    runner = CliRunner()
    text = runner.invoke(prune, ["plan", "digits-cnn-unstructured"])
    assert text.exit_code == 0, text.output
    assert "Recommended: structured pruning (method: channel)" in text.output
    assert "warning:" in text.output
    js = runner.invoke(prune, ["plan", "digits-cnn", "--deploy-target", "gpu-sparse", "--json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    assert data["deploy_target"] == "gpu-sparse" and data["schedule"] == "iterative"


def test_a_combined_recipe_gets_one_plan_over_its_stages() -> None:
    runner = CliRunner()
    js = runner.invoke(prune, ["plan", "minilm-fast", "--json"])  # heads 0.4, ffn 0.5
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    assert data["method"] == "[head, ffn]" and data["structure"] == "structured"
    assert data["schedule"] == "iterative" and data["steps"] == 2  # both in the grey zone
    assert data["removed_fraction"] is None
    assert any(r.startswith("head: Removing about 40%") for r in data["reasons"])
    assert any(r.startswith("ffn: Removing about 50%") for r in data["reasons"])
    # the reason every stage shares is said once, without a stage name
    assert sum("only structured pruning is faster" in r for r in data["reasons"]) == 1
    # a one-shot recipe at a target over 50% in one stage is warned about, by stage
    recipe = parse_recipe({
        "name": "x", "task": "embedding", "model": {"builtin": "all-minilm-l6-v2"},
        "data": {"builtin": "sentences"}, "method": ["head", "ffn"],
        "target": {"heads": 0.25, "ffn": 0.7},
    })  # fmt: skip
    advice = advise_recipe(recipe)
    assert advice.steps == 4 and advice.schedule == "iterative"  # ffn 0.7: ceil(0.7 / 0.2)
    assert [w.split(":")[0] for w in advice.warnings] == ["ffn"]
