"""ONNX export: one file, dynamic batch, checker-valid, quiet on stdout, masks baked in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pruneguard.pruning.export import export_onnx, parity
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.methods.masks import apply_masks, compute_masks
from pruneguard.pruning.models import build_builtin


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = build_builtin("digits-cnn").eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, torch.randn(1, 1, 8, 8), path)
    return model, path


def test_export_writes_one_file_with_named_io_and_opset(
    exported: tuple[torch.nn.Module, Path],
) -> None:
    _, path = exported
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no external .data file
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")


@pytest.mark.parametrize("batch", [1, 5])
def test_exported_model_runs_any_batch_and_matches_torch(
    exported: tuple[torch.nn.Module, Path], batch: int
) -> None:
    model, path = exported
    x = torch.randn(batch, 1, 8, 8)
    (out,) = make_session(path).run(None, {"input": x.numpy()})
    assert out.shape == (batch, 10)
    assert parity(model, path, x) < 1e-4


def test_export_is_quiet_unless_verbose(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRUNEGUARD_VERBOSE", raising=False)
    model = build_builtin("digits-cnn", width=8)
    x = torch.randn(3, 1, 8, 8)
    export_onnx(model, x, tmp_path / "m.onnx", input_name="x", output_name="y")
    captured = capfd.readouterr()
    assert captured.out == "" and "torch.onnx" not in captured.err  # held back
    assert model.training  # the caller's mode is restored
    monkeypatch.setenv("PRUNEGUARD_VERBOSE", "1")
    export_onnx(model, x, tmp_path / "v.onnx", input_name="x", output_name="y")
    captured = capfd.readouterr()
    assert captured.out == "" and "[torch.onnx]" in captured.err  # shown, on stderr


def test_export_bakes_masks_into_a_copy(tmp_path: Path) -> None:
    model = build_builtin("digits-cnn", width=8).eval()
    masks = compute_masks(model, sparsity=0.0, nm=(2, 4))
    apply_masks(model, masks)
    export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    assert hasattr(model.fc, "weight_mask")  # the caller's model keeps its masks
    proto = onnx.load(str(tmp_path / "m.onnx"))
    fc = [
        onnx.numpy_helper.to_array(t)
        for t in proto.graph.initializer
        if t.dims == [10, 16] or list(t.dims) == [16, 10]
    ]
    assert fc and np.isclose((fc[0] == 0).mean(), 0.5)
    assert parity(model, tmp_path / "m.onnx", torch.randn(4, 1, 8, 8)) < 1e-4


def test_exporter_output_is_held_back_and_shown_when_the_export_fails(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import os

    from pruneguard.pruning.export import exporter_output

    with exporter_output(verbose=False):
        print("[torch.onnx] step 1")  # Python level
        os.write(2, b"C-level chatter\n")  # what a native library writes
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == ""
    with pytest.raises(RuntimeError, match="export broke"), exporter_output(verbose=False):
        print("[torch.onnx] step 2")
        raise RuntimeError("export broke")
    failed = capfd.readouterr()
    assert failed.out == "" and "[torch.onnx] step 2" in failed.err
    with exporter_output(verbose=True):
        print("[torch.onnx] step 3")
    shown = capfd.readouterr()
    assert shown.out == "" and "[torch.onnx] step 3" in shown.err  # stdout stays for --json
