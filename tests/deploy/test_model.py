"""LoadedModel: a real ONNX artifact in ONNX Runtime."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from pruneguard.deploy.model import LoadedModel
from pruneguard.deploy.validation import InputSpec, ValidationError
from pruneguard.registry.errors import ArtifactError
from pruneguard.registry.tasks import softmax


def test_load_predicts_probabilities(artifact_factory: Any) -> None:
    model = LoadedModel.load(artifact_factory(seed=3, kind="pruned"), tag="digits:abc")
    assert (model.name, model.version, model.kind, model.n_classes) == (
        "digits",
        "abc",
        "pruned",
        10,
    )
    answer = model.predict(np.ones((4, 1, 8, 8), np.float32))
    np.testing.assert_allclose(answer.outputs.sum(axis=1), 1.0, rtol=1e-5)
    assert answer.classes.tolist() == answer.outputs.argmax(axis=1).tolist()
    assert answer.latency_s > 0


def test_softmax_is_stable_for_large_logits() -> None:
    out = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]])


def test_rows_the_graph_rejects_are_a_validation_error(artifact_factory: Any) -> None:
    model = LoadedModel.load(artifact_factory(seed=3), tag="digits:abc")
    loose = dataclasses.replace(model, spec=InputSpec("input", "float32", ("batch", "c", "h", "w")))
    batch = loose.validate([[[[1.0] * 4] * 4]], max_batch=4)  # passes the (dynamic) io spec
    with pytest.raises(ValidationError) as info:
        loose.predict(batch)
    assert info.value.problem == "rejected_by_model"


def test_output_not_matching_the_class_labels_is_refused_at_load(artifact_factory: Any) -> None:
    path = artifact_factory(seed=3)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["io"]["class_labels"] = ["a", "b", "c"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"expected \[batch, 3\]"):
        LoadedModel.load(path, tag="digits:bad")
