"""Small, real artifacts for tests that do not need the pruning pipeline.

The model is a real ONNX graph (Flatten → Gemm → logits) built with ``onnx.helper``, so it
loads in ONNX Runtime like any exported model; the manifest passes ``read_manifest``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np


def make_onnx(path: Path, *, seed: int, input_shape: tuple[int, ...], n_classes: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_features = int(np.prod(input_shape))
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.5, size=(n_features, n_classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=(n_classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
        ],
        "pruneguard_test_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_manifest(
    *, name: str, kind: str, input_shape: tuple[int, ...], n_classes: int, parent: Any
) -> dict[str, Any]:
    latency = {"1": {"p50": 0.05, "p95": 0.07}, "8": {"p50": 0.1, "p95": 0.12}}
    return {
        "schema": "pruneguard.artifact/v1",
        "name": name,
        "kind": kind,
        "parent": parent,
        "pruning": None
        if kind == "dense"
        else {
            "method": "channel",
            "criterion": "l1",
            "target": {"ratio": 0.5},
            "schedule": {"kind": "one-shot", "steps": 1},
            "finetune": None,
        },
        "metrics": {
            "accuracy": 0.95,
            "baseline_accuracy": 0.96,
            "params": 650,
            "baseline_params": 650,
            "macs": 640,
            "baseline_macs": 640,
            "onnx_bytes": 3000,
            "latency_ms": latency,
            "baseline_latency_ms": latency,
            "speedup": {"1": 1.0, "8": 1.0},
            "parity_max_abs_diff": 0.0,
            "agreement_with_baseline": 0.97,
        },
        "io": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", *input_shape]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", n_classes]}],
            "class_labels": [str(i) for i in range(n_classes)],
        },
        "versions": {"pruneguard": "test"},
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def make_artifact(
    dest: Path,
    *,
    name: str = "digits",
    kind: str = "dense",
    seed: int = 0,
    input_shape: tuple[int, ...] = (1, 8, 8),
    n_classes: int = 10,
    parent: Any = None,
    reference_rows: int = 200,
) -> Path:
    """Write a valid artifact directory at ``dest`` and return it."""
    import pandas as pd

    from pruneguard.registry.artifact import write_artifact

    def write_files(tmp: Path) -> None:
        make_onnx(tmp / "model.onnx", seed=seed, input_shape=input_shape, n_classes=n_classes)
        rng = np.random.default_rng(seed + 1)
        n_features = int(np.prod(input_shape))
        features = rng.uniform(0, 16, size=(reference_rows, n_features)).astype(np.float32)
        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(n_features)])
        frame["label"] = rng.integers(0, n_classes, size=reference_rows)
        frame["prediction"] = rng.integers(0, n_classes, size=reference_rows)
        frame.to_parquet(tmp / "reference.parquet", index=False)

    manifest = make_manifest(
        name=name, kind=kind, input_shape=input_shape, n_classes=n_classes, parent=parent
    )
    write_artifact(dest, manifest, write_files)
    return dest
