"""Every bad input of issue 2, through the CLI: non-zero exit, one line naming the problem and
the fix, and nothing left in --out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from pruneguard.pruning.cli import bench, prune

TINYNET = """
from torch import nn

def make(width=4):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * 64, 10),
    )
"""

DIGITS = """
name: tiny
model: {builtin: digits-cnn, options: {width: 8}}
data: {builtin: digits}
train: {epochs: 2, lr: 0.01}
method: channel
criterion: l2
export: {batch_sizes: [1], latency_blocks: 2, latency_runs: 3}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(body)
    return path


def _factory_recipe(tmp_path: Path, weights: str) -> Path:
    (tmp_path / "tinynet.py").write_text(TINYNET)
    return _recipe(
        tmp_path,
        "name: tiny\n"
        f"model: {{factory: 'tinynet:make', weights: {weights}, input_shape: [1, 8, 8]}}\n"
        "data: {builtin: digits}\nmethod: channel\ncriterion: l1\ntarget: {ratio: 0.5}\n",
    )


def _fails_cleanly(tmp_path: Path, recipe: Path, *fragments: str) -> str:
    out = tmp_path / "out"
    result = CliRunner().invoke(prune, [str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]
    assert result.stdout == ""
    return lines[0]


def test_unknown_key(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, DIGITS + "target: {ratio: 0.5}\nfinetunning: {epochs: 1}\n")
    _fails_cleanly(
        tmp_path, recipe, "finetunning: unknown key", "did you mean 'finetune'", "allowed"
    )


@pytest.mark.parametrize("ratio", ["0", "-0.1", "1", "1.5"])
def test_ratio_out_of_range(tmp_path: Path, ratio: str) -> None:
    recipe = _recipe(tmp_path, DIGITS + f"target: {{ratio: {ratio}}}\n")
    _fails_cleanly(tmp_path, recipe, f"target.ratio={ratio}", "must be > 0 and < 1")


def test_factory_without_input_shape_takes_it_from_the_data(tmp_path: Path) -> None:
    (tmp_path / "tinynet.py").write_text(TINYNET)
    body = (
        "name: tiny\nmodel: {factory: 'tinynet:make'}\ndata: {builtin: digits}\n"
        "method: channel\ncriterion: l1\ntarget: {ratio: 0.5}\n"
        "accept: {max_accuracy_drop: 1.0, min_speedup: 0.01}\n"
        "export: {batch_sizes: [1], latency_blocks: 2, latency_runs: 3}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(prune, [str(_recipe(tmp_path, body)), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    io = json.loads((out / "pruned" / "manifest.json").read_text())["io"]
    assert io["inputs"][0]["shape"] == ["batch", 1, 8, 8]


def test_a_model_that_cannot_take_the_data_names_the_shape_tried(tmp_path: Path) -> None:
    # its own module name: another test's `tinynet` may already be imported
    (tmp_path / "widenet.py").write_text(TINYNET.replace("width * 64", "width * 100"))
    recipe = _recipe(
        tmp_path,
        "name: tiny\nmodel: {factory: 'widenet:make'}\ndata: {builtin: digits}\n"
        "method: channel\ncriterion: l1\ntarget: {ratio: 0.5}\n",
    )
    _fails_cleanly(
        tmp_path, recipe, "fails on an input of shape [1, 1, 8, 8]", "the data's first batch"
    )


def test_factory_that_does_not_import(tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "name: tiny\nmodel: {factory: 'no_such_pkg.models:make', input_shape: [1, 8, 8]}\n"
        "data: {builtin: digits}\nmethod: channel\ntarget: {ratio: 0.5}\n",
    )
    _fails_cleanly(tmp_path, recipe, "module 'no_such_pkg.models' does not import", "fix: install")


def test_weights_that_do_not_match(tmp_path: Path) -> None:
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    (tmp_path / "tinynet.py").write_text(TINYNET)
    try:
        wide = importlib.import_module("tinynet").make(width=8)
    finally:
        sys.path.remove(str(tmp_path))
    state = {k: v for k, v in wide.state_dict().items() if not k.startswith("4.")}
    save_file(state, str(tmp_path / "w.safetensors"))
    line = _fails_cleanly(
        tmp_path,
        _factory_recipe(tmp_path, "w.safetensors"),
        "do not match the model from tinynet:make",
    )
    assert "missing 2 keys (4.weight, 4.bias)" in line
    assert "0.weight file [8, 1, 3, 3] vs model [4, 1, 3, 3]" in line
    assert "fix: save the weights from this model's state_dict" in line


def test_pickle_file_given_as_weights(tmp_path: Path) -> None:
    (tmp_path / "w.pkl").write_bytes(b"\x80\x04\x95\x00")  # a pickle header: never opened
    _fails_cleanly(
        tmp_path, _factory_recipe(tmp_path, "w.pkl"), "pickle files are never loaded", "safetensors"
    )


def test_pickled_objects_in_a_pt_file(tmp_path: Path) -> None:
    torch.save({"model": argparse.Namespace(weights=1)}, tmp_path / "w.pt")
    _fails_cleanly(
        tmp_path,
        _factory_recipe(tmp_path, "w.pt"),
        "torch.load(weights_only=True) refuses it",
        "convert it once",
    )


def test_target_that_cannot_be_reached(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, DIGITS + "target: {macs_reduction: 0.999}\n")
    _fails_cleanly(
        tmp_path, recipe, "macs_reduction 0.999 is unreachable", "Fix: set macs_reduction <="
    )


def test_accuracy_budget_missed_writes_both_and_exits_1(tmp_path: Path) -> None:
    body = DIGITS.replace("epochs: 2", "epochs: 3")
    recipe = _recipe(tmp_path, body + "target: {ratio: 0.9}\naccept: {max_accuracy_drop: 0.0}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(prune, [str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "NOT accepted: accuracy" in result.stderr
    assert "accept.max_accuracy_drop allows 0.00" in result.stderr.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["dense", "pruned"]  # written, for a look


def test_unknown_recipe_name(tmp_path: Path) -> None:
    _fails_cleanly(tmp_path, Path("no-such-recipe"), "neither a file nor a built-in recipe")


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out" / "dense").mkdir(parents=True)
    recipe = _recipe(tmp_path, DIGITS + "target: {ratio: 0.5}\n")
    result = CliRunner().invoke(prune, [str(recipe), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code != 0
    assert "already exists; choose another --out" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dense"]


def test_help_texts_give_examples() -> None:
    runner = CliRunner()
    for args in (["--help"], ["run", "--help"], ["plan", "--help"], ["sweep", "--help"]):
        result = runner.invoke(prune, args)
        assert result.exit_code == 0 and "Example" in result.output, args
    assert "Example" in runner.invoke(bench, ["--help"]).output


def test_bench_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "a.onnx"
    bad.write_bytes(b"not onnx")
    result = CliRunner().invoke(bench, [str(bad), str(bad)])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot load" in result.stderr
