"""End to end on digits: one small run through the CLI (shared by the tests of this module)
writes dense/ and pruned/ artifacts that verify, and whose numbers agree with the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from tiny_recipes import DIGITS_TINY

from pruneguard.pruning.cli import prune
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.models.load import load_model
from pruneguard.pruning.pipeline import run
from pruneguard.pruning.recipe import ModelSpec, load_recipe
from pruneguard.registry.artifact import sha256_file, verify

GOLDEN = json.loads((Path(__file__).parent / "golden_manifest_keys.json").read_text())

TINY = DIGITS_TINY


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("digits-run")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(TINY)
    result = CliRunner().invoke(prune, [str(recipe), "--out", str(tmp / "out"), "--json"])
    assert result.exit_code == 0, result.output
    return {"out": tmp / "out", "stdout": result.stdout, "stderr": result.stderr}


def test_json_stdout_is_the_pruned_manifest_alone(digits_run: dict[str, Any]) -> None:
    printed = json.loads(digits_run["stdout"])  # nothing else on stdout
    on_disk = json.loads((digits_run["out"] / "pruned" / "manifest.json").read_text())
    assert printed == on_disk
    assert "[pruneguard] wrote" in digits_run["stderr"]


def test_both_artifacts_verify_and_link(digits_run: dict[str, Any]) -> None:
    out = digits_run["out"]
    dense, pruned = verify(out / "dense"), verify(out / "pruned")
    assert (dense["kind"], pruned["kind"]) == ("dense", "pruned")
    assert dense["parent"] is None
    assert pruned["parent"] == {"sha256": sha256_file(out / "dense" / "model.onnx"), "tag": None}
    assert sorted(p.name for p in out.iterdir()) == ["dense", "pruned"]  # no staging left over


def test_pruned_is_smaller_and_reaches_the_mac_target(digits_run: dict[str, Any]) -> None:
    m = verify(digits_run["out"] / "pruned")["metrics"]
    assert m["macs"] < m["baseline_macs"] and m["params"] < m["baseline_params"]
    assert m["macs_reduction"] >= 0.5
    assert m["onnx_bytes"] < m["baseline_onnx_bytes"]
    assert m["parity_max_abs_diff"] <= 1e-4
    assert set(m["speedup"]) == {"1", "4"}
    for batch, speedup in m["speedup"].items():
        ratio = m["baseline_latency_ms"][batch]["p50"] / m["latency_ms"][batch]["p50"]
        assert speedup == pytest.approx(ratio)


def test_manifest_keys_match_golden(digits_run: dict[str, Any]) -> None:
    for kind in ("dense", "pruned"):
        manifest = verify(digits_run["out"] / kind)
        assert sorted(manifest) == GOLDEN["top_level"]
        assert sorted(manifest["metrics"]) == GOLDEN["metrics"]
        assert sorted(manifest["metrics"]["latency_setup"]) == GOLDEN["latency_setup"]
        assert manifest["metrics"]["latency_setup"]["ort_threads"] == 2  # the recipe's, not ORT's
        assert sorted(manifest["io"]) == GOLDEN["io"]
    pruning = verify(digits_run["out"] / "pruned")["pruning"]
    assert sorted(pruning) == GOLDEN["pruning"]
    # the task adapter's recovery loss, as the text tasks record theirs
    assert pruning["distillation"] == {"loss": "cross_entropy + logits_kl", "temperature": 2.0,
                                       "kl_weight": 0.5}  # fmt: skip


def _onnx_predictions(artifact: Path, frame: pd.DataFrame, n_features: int) -> np.ndarray:
    session = make_session(artifact / "model.onnx")
    x = frame[[f"f{i}" for i in range(n_features)]].to_numpy(np.float32).reshape(-1, 1, 8, 8)
    (logits,) = session.run(None, {"input": x})
    return np.asarray(logits).argmax(axis=1)


def test_reference_rows_are_what_the_onnx_model_predicts(digits_run: dict[str, Any]) -> None:
    out = digits_run["out"]
    frames = {k: pd.read_parquet(out / k / "reference.parquet") for k in ("dense", "pruned")}
    for kind, frame in frames.items():
        assert list(frame.columns) == [*(f"f{i}" for i in range(64)), "label", "prediction"]
        assert len(frame) == 360
        assert frame[[f"f{i}" for i in range(64)]].to_numpy().max() == 16.0  # raw pixels, 0..16
        np.testing.assert_array_equal(_onnx_predictions(out / kind, frame, 64), frame["prediction"])
    m = verify(out / "pruned")["metrics"]
    agreement = (frames["dense"]["prediction"] == frames["pruned"]["prediction"]).mean()
    assert m["agreement_with_baseline"] == pytest.approx(agreement)
    assert m["accuracy"] == pytest.approx(
        (frames["pruned"]["prediction"] == frames["pruned"]["label"]).mean()
    )


def test_io_spec_matches_the_onnx_graph(digits_run: dict[str, Any]) -> None:
    manifest = verify(digits_run["out"] / "pruned")
    io = manifest["io"]
    assert io["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert io["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]
    assert io["class_labels"] == [str(i) for i in range(10)]
    session = make_session(digits_run["out"] / "pruned" / "model.onnx")
    (logits,) = session.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})  # symbolic batch
    assert np.asarray(logits).shape == (3, 10)
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "pruneguard"}


def test_global_scope_reaches_the_mac_target_with_uneven_widths(tmp_path: Path) -> None:
    # DIGITS_TINY is iterative (2 steps): both steps shrink toward the one ranking's widths
    recipe = tmp_path / "global.yaml"
    recipe.write_text(TINY.replace("method: channel", "method: channel\nscope: global"))
    _, pruned = run(load_recipe(recipe), tmp_path / "out", progress=False)
    assert pruned["pruning"]["scope"] == "global"
    assert pruned["metrics"]["macs_reduction"] >= 0.5
    import onnx

    def widths(side: str) -> list[int]:
        graph = onnx.load(tmp_path / "out" / side / "model.onnx").graph
        convs = {n.input[1] for n in graph.node if n.op_type == "Conv"}
        return [t.dims[0] for t in graph.initializer if t.name in convs]

    kept = {round(p / d, 3) for p, d in zip(widths("pruned"), widths("dense"), strict=True)}
    assert len(kept) > 1  # a uniform cut would keep one share in every conv


def test_unstructured_run_reports_sparsity_and_the_cpu_truth(tmp_path: Path) -> None:
    recipe = tmp_path / "sparse.yaml"
    recipe.write_text(
        TINY.replace("method: channel", "method: unstructured\nscope: global")
        .replace("criterion: taylor", "criterion: l1")
        .replace("macs_reduction: 0.5", "sparsity: 0.8")
    )
    _, pruned = run(load_recipe(recipe), tmp_path / "out", progress=False)
    m = pruned["metrics"]
    assert sorted(m) == sorted(GOLDEN["metrics"] + GOLDEN["metrics_sparse"])
    assert m["weight_sparsity"] == pytest.approx(0.8, abs=0.01)
    assert m["macs"] == m["baseline_macs"]  # zeros are still multiplied
    assert m["onnx_gzip_bytes"] < m["baseline_onnx_gzip_bytes"]
    assert any("ONNX Runtime on CPU" in note and "no" in note for note in pruned["notes"])
    assert verify(tmp_path / "out" / "pruned")["metrics"]["sparsity"] == m["sparsity"]


def test_factory_model_loads_safetensors_and_weights_only_pt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinyfactory.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinyfactory  # type: ignore[import-not-found]

    source = tinyfactory.make()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        spec = ModelSpec(factory="tinyfactory:make", weights=tmp_path / name, input_shape=(1, 8, 8))
        model = load_model(spec, search_path=tmp_path)
        assert torch.equal(model[1].weight, source[1].weight)
        assert not model.training


def test_register_puts_both_versions_in_the_registry(
    digits_run: dict[str, Any], pruneguard_home: Path
) -> None:
    from pruneguard.pruning.cli import _register
    from pruneguard.registry import open_registry

    acceptance = verify(digits_run["out"] / "pruned")["pruning"]["acceptance"]
    assert acceptance["passed"] and acceptance["budget"] == "recipe"
    block = _register(digits_run["out"], "auto")
    assert block["promoted"] and block["pruned"]["aliases"] == ["champion"]
    registry = open_registry()
    try:
        versions = {v.kind: v for v in registry.list("digits-tiny")}
        assert set(versions) == {"dense", "pruned"}
        aliases = registry.aliases("digits-tiny")
        assert aliases["champion"] == versions["pruned"].tag
        assert aliases["shadow"] == versions["dense"].tag
    finally:
        registry.close()


def test_builtin_data_loaders() -> None:
    from pruneguard.pruning.data import load_data
    from pruneguard.pruning.recipe import DataSpec

    digits = load_data(DataSpec(builtin="digits"), seed=0)
    x, y = next(iter(digits["val"]))
    assert tuple(x.shape[1:]) == (1, 8, 8) and x.max() <= 16 and x.min() >= 0
    assert sum(len(b[1]) for b in digits["val"]) == 360
    assert sum(len(b[1]) for b in digits["train"]) == 1437
    spec = DataSpec(builtin="synthetic", shape=(3, 16, 16), classes=5, samples=12, batch_size=4)
    synthetic = load_data(spec, seed=1)
    x, y = next(iter(synthetic["train"]))
    assert tuple(x.shape) == (4, 3, 16, 16) and int(y.max()) < 5
    again = next(iter(load_data(spec, seed=1)["val"]))[0]
    assert torch.equal(next(iter(synthetic["val"]))[0], again)  # seeded


def test_data_factory_must_return_train_and_val(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pruneguard.pruning.data import load_data
    from pruneguard.pruning.recipe import DataSpec
    from pruneguard.registry.errors import ConfigError

    (tmp_path / "mydata.py").write_text(
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n\n"
        "def good():\n    ds = TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))\n"
        "    return {'train': DataLoader(ds), 'val': DataLoader(ds)}\n\n"
        "def bad():\n    return [1, 2]\n"
    )
    loaders = load_data(DataSpec(factory="mydata:good"), search_path=tmp_path)
    assert set(loaders) == {"train", "val"}
    with pytest.raises(ConfigError, match="must return"):
        load_data(DataSpec(factory="mydata:bad"), search_path=tmp_path)
