"""`bench A.onnx B.onnx`: latency of two ONNX models in alternating blocks."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pruneguard.pruning.benchmark import bench_onnx_pair, random_feed
from pruneguard.pruning.export import export_onnx
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.models import build_builtin
from pruneguard.registry.errors import ConfigError


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("bench")
    x = torch.randn(1, 1, 8, 8)
    export_onnx(build_builtin("digits-cnn", width=32), x, out / "wide.onnx")
    export_onnx(build_builtin("digits-cnn", width=8), x, out / "narrow.onnx")
    return out / "wide.onnx", out / "narrow.onnx"


def test_bench_reports_latency_and_speedup_per_batch(pair: tuple[Path, Path]) -> None:
    wide, narrow = pair
    result = bench_onnx_pair(wide, narrow, batch_sizes=(1, 3), blocks=2, runs_per_block=4)
    assert json.loads(json.dumps(result)) == result
    assert result["a"] == str(wide) and result["b"] == str(narrow)
    for label in ("a", "b"):
        assert set(result["latency_ms"][label]) == {"1", "3"}
        stats = result["latency_ms"][label]["3"]
        assert stats["runs"] == 2 * 3  # the first run of each block is dropped
        assert 0 < stats["p50"] <= stats["p95"]
    for batch in ("1", "3"):
        a, b = result["latency_ms"]["a"][batch]["p50"], result["latency_ms"]["b"][batch]["p50"]
        assert result["speedup"][batch] == pytest.approx(a / b)


def test_random_feed_follows_the_model_input(pair: tuple[Path, Path]) -> None:
    feed = random_feed(make_session(pair[0]), 4)
    assert list(feed) == ["input"]
    assert feed["input"].shape == (4, 1, 8, 8) and feed["input"].dtype.name == "float32"


def _identity_model(path: Path, shape: list) -> Path:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])], "g", [inp], [out]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_models_with_different_inputs_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    other = _identity_model(tmp_path / "other.onnx", ["batch", 3, 8, 8])
    with pytest.raises(ConfigError, match="different inputs"):
        bench_onnx_pair(pair[0], other, blocks=1, runs_per_block=2)


def test_symbolic_non_batch_axes_are_refused(tmp_path: Path) -> None:
    seq = _identity_model(tmp_path / "seq.onnx", ["batch", "seq"])
    with pytest.raises(ConfigError, match="only the batch axis"):
        random_feed(make_session(seq), 1)
