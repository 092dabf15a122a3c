"""The baseline for bench/serve_throughput.py: a plain BentoML service answering from one
ONNX Runtime session, with none of pruneguard's extras (no registry, shadow, prediction log,
validation or metrics of its own). ``PLAIN_ONNX`` names the model file.

Text mode: ``PLAIN_TOKENIZER`` names a ``tokenizer.json``; requests are then
``{"texts": [...]}``, tokenized with the ``tokenizers`` library as deploy/text.py does
(truncated on the right at ``PLAIN_MAX_LENGTH``, each batch padded on the right to its
longest text with ``PLAIN_PAD_ID``/``PLAIN_PAD_TOKEN``) and answered with L2-normalised
embeddings.

    PLAIN_ONNX=model.onnx bentoml serve plain_service:PlainService --working-dir bench
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np

# the encodings' fields that feed each input name (as deploy/text.py)
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _tokenizer() -> Any:
    if not os.environ.get("PLAIN_TOKENIZER"):
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.environ["PLAIN_TOKENIZER"])
    tokenizer.enable_truncation(int(os.environ["PLAIN_MAX_LENGTH"]), direction="right")
    tokenizer.enable_padding(
        direction="right",
        pad_id=int(os.environ["PLAIN_PAD_ID"]),
        pad_token=os.environ["PLAIN_PAD_TOKEN"],
    )
    return tokenizer


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
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = _tokenizer()

    @bentoml.api(route="/predict")
    def predict(
        self, inputs: list[Any] | None = None, texts: list[str] | None = None
    ) -> dict[str, Any]:
        if texts is not None:
            return {"embeddings": self._embed(texts).tolist()}
        batch = np.asarray(inputs, dtype=np.float32)
        (logits,) = self.session.run(None, {self.input: batch})
        probabilities = _softmax(logits)
        return {
            "predictions": probabilities.argmax(axis=1).tolist(),
            "probabilities": probabilities.tolist(),
        }

    def _embed(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            name: np.asarray([getattr(e, _FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.input_names
        }
        vectors = self.session.run(None, feeds)[0].reshape(len(texts), -1)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
