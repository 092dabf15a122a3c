"""Building the manifest from measured numbers (no pipeline run): keys, speed-up, reference rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from pruneguard.pruning.artifacts import OnnxMeasure, RunRecord, Side
from pruneguard.pruning.manifest import (
    build_manifest,
    dense_manifest,
    io_spec,
    latency_metrics,
    pruned_manifest,
)
from pruneguard.pruning.recipe import Recipe, parse_recipe
from pruneguard.pruning.tasks.tensor_classification import Evaluation, reference_frame
from pruneguard.registry.artifact import REQUIRED_KEYS, REQUIRED_METRICS, SCHEMA

GOLDEN = json.loads((Path(__file__).parent / "golden_manifest_keys.json").read_text())
LAT = {
    "1": {"p50": 2.0, "p95": 3.0, "mean": 2.1, "runs": 10},
    "8": {"p50": 8.0, "p95": 9.0, "mean": 8.2, "runs": 10},
}
FAST = {
    "1": {"p50": 1.0, "p95": 1.5, "mean": 1.1, "runs": 10},
    "8": {"p50": 2.0, "p95": 2.5, "mean": 2.1, "runs": 10},
}


def _evaluation(rng: np.random.Generator, correct: float, n: int = 50) -> Evaluation:
    labels = rng.integers(0, 10, n)
    predictions = np.where(rng.random(n) < correct, labels, (labels + 1) % 10)
    inputs = rng.uniform(0, 16, (n, 1, 8, 8)).astype(np.float32)
    accuracy = float((labels == predictions).mean())
    return Evaluation(accuracy, 650, 640, inputs, labels, predictions)


def _recipe(method: str = "channel") -> Recipe:
    target = {"sparsity": 0.5} if method == "unstructured" else {"ratio": 0.5}
    return parse_recipe(
        {"name": "m", "model": {"builtin": "digits-cnn"}, "data": {"builtin": "digits"},
         "method": method, "criterion": "l1", "target": target}
    )  # fmt: skip


MODEL = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
IO = io_spec(input_shape=[1, 8, 8], n_outputs=10, class_labels=list("0123456789"), description="d")
PARENT = {"sha256": "ab", "tag": None}


def _side(evaluation: Evaluation, **extra: float) -> Side:
    return Side(MODEL, evaluation, evaluation.params, evaluation.macs, extra)


def _record(recipe: Recipe) -> RunRecord:
    return RunRecord(pruning=recipe.pruning_section(), notes=["a note"])


ONNX = OnnxMeasure(
    parity={"dense": 1e-6, "pruned": 2e-6},
    onnx_bytes={"dense": 4000, "pruned": 2000},
    latency={"dense": LAT, "pruned": FAST},
    gzip_bytes={"dense": 3500, "pruned": 900},
)


def test_latency_metrics_speedup_is_dense_over_pruned_p50() -> None:
    m = latency_metrics(LAT, FAST, {"ort_threads": 1})
    assert m["speedup"] == {"1": 2.0, "8": 4.0}
    assert m["baseline_latency_ms"]["8"]["p95"] == 9.0
    assert m["latency_setup"] == {"ort_threads": 1}


def test_build_manifest_refuses_missing_metrics() -> None:
    with pytest.raises(ValueError, match=r"lack.*speedup"):
        build_manifest(
            name="m", kind="dense", parent=None, pruning=None, metrics={"accuracy": 1.0}, io={}
        )


def test_dense_and_pruned_manifests_have_the_golden_keys() -> None:
    recipe = _recipe()
    dense = _side(_evaluation(np.random.default_rng(0), 0.9))
    pruned_eval = _evaluation(np.random.default_rng(1), 0.85)
    quality = {"validation_rows": 50}
    dm = dense_manifest(recipe, dense, quality, ONNX, io=IO, record=_record(recipe))
    pm = pruned_manifest(recipe, dense, _side(pruned_eval), quality, ONNX, io=IO,
                         record=_record(recipe), parent=PARENT)  # fmt: skip
    for manifest in (dm, pm):
        assert sorted([*manifest, "files"]) == GOLDEN["top_level"]  # write_artifact adds files
        assert sorted(manifest["metrics"]) == GOLDEN["metrics"]
        assert set(manifest) >= REQUIRED_KEYS - {"files"}
        assert set(manifest["metrics"]) >= REQUIRED_METRICS
        assert manifest["schema"] == SCHEMA
        assert manifest["notes"] == ["a note"]
    assert dm["metrics"]["speedup"] == {"1": 1.0, "8": 1.0}
    assert dm["metrics"]["agreement_with_baseline"] == 1.0
    assert dm["metrics"]["accuracy_drop"] == 0.0
    assert pm["metrics"]["speedup"] == {"1": 2.0, "8": 4.0}
    agreement = float((pruned_eval.predictions == dense.evaluation.predictions).mean())
    assert pm["metrics"]["agreement_with_baseline"] == agreement
    assert pm["metrics"]["accuracy_drop"] == dense.evaluation.accuracy - pruned_eval.accuracy
    assert pm["pruning"]["target"] == {"ratio": 0.5}
    assert pm["pruning"]["acceptance"]["passed"] is (pm["metrics"]["accuracy_drop"] <= 0.01)
    json.dumps(pm)  # JSON-able throughout


def test_sparse_manifest_adds_sparsity_and_the_cpu_note() -> None:
    recipe = _recipe("unstructured")
    dense = _side(_evaluation(np.random.default_rng(0), 0.9))
    pruned = _side(dense.evaluation, sparsity=0.25, weight_sparsity=0.5)
    pm = pruned_manifest(recipe, dense, pruned, {"validation_rows": 50}, ONNX, io=IO,
                         record=RunRecord(recipe.pruning_section()), parent=PARENT)  # fmt: skip
    assert sorted(set(pm["metrics"]) - set(GOLDEN["metrics"])) == GOLDEN["metrics_sparse"]
    assert pm["metrics"]["weight_sparsity"] == 0.5
    assert pm["metrics"]["onnx_gzip_bytes"] == 900
    note = pm["notes"][0]
    assert (
        "latency does not improve" in note and "2.00x at batch 1" in note and "900 vs 3500" in note
    )


def test_reference_frame_flattens_inputs() -> None:
    ev = _evaluation(np.random.default_rng(2), 0.9)
    frame = reference_frame(ev)
    assert list(frame.columns) == [*(f"f{i}" for i in range(64)), "label", "prediction"]
    np.testing.assert_array_equal(frame["f9"].to_numpy(), ev.inputs.reshape(50, -1)[:, 9])
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), ev.predictions)


def test_reference_frame_keeps_only_labels_for_images() -> None:
    ev = _evaluation(np.random.default_rng(3), 0.9)
    wide = Evaluation(0.9, 1, 1, np.zeros((50, 3, 40, 40), np.float32), ev.labels, ev.predictions)
    assert list(reference_frame(wide, rows=20).columns) == ["label", "prediction"]
    assert len(reference_frame(wide, rows=20)) == 20


def test_io_spec_has_a_symbolic_batch() -> None:
    io = io_spec(
        input_shape=[1, 8, 8], n_outputs=10, class_labels=list("0123456789"), description="d"
    )
    assert io["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert io["outputs"][0]["shape"] == ["batch", 10]
