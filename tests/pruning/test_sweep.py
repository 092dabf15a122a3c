"""`pruneguard prune sweep`: variants of one dense model → table on stdout, sweep.json, sweep.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pruneguard.pruning.cli import prune
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.pruning.sweep import variants
from pruneguard.registry.errors import ConfigError

TINY = """
name: digits-sweep
model: {builtin: digits-cnn, options: {width: 8}}
data: {builtin: digits}
train: {epochs: 2, lr: 0.01}
method: channel
criterion: l2
target: {ratio: 0.5}
schedule: {kind: iterative, steps: 2}
finetune: {epochs: 0, recovery_epochs: 1, lr: 0.005}
export: {batch_sizes: [1], latency_blocks: 2, latency_runs: 3}
"""

BASE = {
    "name": "s", "model": {"builtin": "digits-cnn"}, "data": {"builtin": "digits"},
    "method": "channel", "criterion": "l2", "target": {"ratio": 0.5},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_variants_cover_the_grid_and_keep_the_target_kind() -> None:
    recipe = parse_recipe(BASE)
    grid = variants(
        recipe, targets=[0.3, 0.6], criteria=["l1", "random"], schedules=["one-shot", "iterative"]
    )
    assert len(grid) == 8
    assert {(v.target.kind, v.target.value) for v in grid} == {("ratio", 0.3), ("ratio", 0.6)}
    assert {(v.schedule.kind, v.schedule.steps) for v in grid} == {
        ("one-shot", 1),
        ("iterative", 4),
    }
    assert variants(recipe) == [recipe]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": [1.2]}, "target.ratio=1.2: must be > 0 and < 1"),
        ({"criteria": ["magnitude"]}, "criterion='magnitude': must be one of"),
        ({"schedules": ["gradual"]}, "schedule.kind='gradual'"),
    ],
)
def test_bad_variants_are_config_errors(kwargs: dict[str, list[object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        variants(parse_recipe(BASE), **kwargs)  # type: ignore[arg-type]


def test_sweep_writes_table_json_and_png(tmp_path: Path) -> None:
    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    args = [
        "sweep",
        str(recipe),
        "--out",
        str(out),
        "--ratios",
        "0.5",
        "--schedules",
        "one-shot,iterative",
        "-q",
    ]
    result = CliRunner().invoke(prune, args)
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].startswith("digits-sweep (channel); dense: accuracy")
    assert "one-shot×1" in result.stdout and "iterative×2" in result.stdout
    data = json.loads((out / "sweep.json").read_text())
    assert [(r["schedule"], r["steps"]) for r in data["rows"]] == [
        ("one-shot", 1),
        ("iterative", 2),
    ]
    for row in data["rows"]:
        assert row["macs"] < data["baseline"]["macs"] and 0 <= row["accuracy"] <= 1
        assert set(row["speedup"]) == {"1"}
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rejects_a_bad_ratio_before_any_work(tmp_path: Path) -> None:
    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        prune, ["sweep", str(recipe), "--out", str(out), "--ratios", "0.5,1.5"]
    )
    assert result.exit_code != 0
    assert "target.ratio=1.5" in result.stderr
    assert not out.exists()
