"""The baseline for bench/serve_throughput.py: a plain BentoML service answering from one
ONNX Runtime session, with none of pruneguard's extras (no registry, shadow, prediction log,
validation or metrics of its own). ``PLAIN_ONNX`` names the model file.

    PLAIN_ONNX=model.onnx bentoml serve plain_service:PlainService --working-dir bench
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@bentoml.service(name="plain", workers=1, traffic={"timeout": 30})
class PlainService:
    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as pruneguard's default
        self.session = ort.InferenceSession(
            os.environ["PLAIN_ONNX"], options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    @bentoml.api(route="/predict")
    def predict(self, inputs: list[Any]) -> dict[str, Any]:
        batch = np.asarray(inputs, dtype=np.float32)
        (logits,) = self.session.run(None, {self.input: batch})
        probabilities = _softmax(logits)
        return {
            "predictions": probabilities.argmax(axis=1).tolist(),
            "probabilities": probabilities.tolist(),
        }
