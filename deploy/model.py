"""One loaded model version: an ONNX Runtime session plus its manifest's io spec."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.deploy.validation import InputSpec, ValidationError, validate_inputs
from pruneguard.registry.artifact import MODEL, read_manifest
from pruneguard.registry.errors import ArtifactError

__all__ = ["LoadedModel", "Prediction", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """A batch's answer: class index and probabilities per row, and the session's time."""

    classes: np.ndarray  # [batch] int64
    probabilities: np.ndarray  # [batch, n_classes] float32
    latency_s: float


@dataclass(frozen=True)
class LoadedModel:
    """A servable version. Immutable: a swap replaces the whole object."""

    tag: str
    path: Path  # the artifact directory (a shadow process opens its own session from it)
    kind: str
    manifest: dict[str, Any]
    spec: InputSpec
    output_name: str
    outputs_probabilities: bool
    session: Any  # onnxruntime.InferenceSession (thread-safe for run())

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1] if ":" in self.tag else self.tag

    @property
    def n_classes(self) -> int | None:
        labels = self.manifest.get("io", {}).get("class_labels")
        return len(labels) if isinstance(labels, list) and labels else None

    @classmethod
    def load(cls, path: Path, *, tag: str, threads: int = 1) -> LoadedModel:
        """Open ``path`` (an artifact dir already verified by the registry) and run it once
        on zeros, so a graph that cannot run is refused before it serves traffic."""
        import onnxruntime as ort

        manifest = read_manifest(path)
        spec = InputSpec.from_manifest(manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(Path(path) / MODEL), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own types for a bad graph
            raise ArtifactError(f"{tag}: ONNX Runtime cannot load {MODEL}: {exc}") from exc
        output_name = session.get_outputs()[0].name
        model = cls(
            tag=tag,
            path=Path(path),
            kind=str(manifest.get("kind", "unknown")),
            manifest=manifest,
            spec=spec,
            output_name=output_name,
            outputs_probabilities="prob" in output_name.lower(),
            session=session,
        )
        model._smoke_test()
        return model

    def _smoke_test(self) -> None:
        row = [1 if isinstance(dim, str) else dim for dim in self.spec.shape[1:]]
        zeros = np.zeros([1, *row], dtype=self.spec.dtype)
        try:
            out = self.predict(zeros)
        except Exception as exc:
            raise ArtifactError(f"{self.tag}: a test inference failed: {exc}") from exc
        n = self.n_classes
        if out.probabilities.ndim != 2 or (n is not None and out.probabilities.shape[1] != n):
            raise ArtifactError(
                f"{self.tag}: output {self.output_name} has shape {list(out.probabilities.shape)}, "
                f"expected [batch, {n}] from the manifest's class_labels"
            )

    def validate(self, inputs: Any, *, max_batch: int) -> np.ndarray:
        return validate_inputs(inputs, self.spec, max_batch=max_batch)

    def predict(self, batch: np.ndarray) -> Prediction:
        start = time.perf_counter()
        try:
            (raw,) = self.session.run([self.output_name], {self.spec.name: batch})
        except Exception as exc:
            # ORT's InvalidArgument: the rows passed the io spec (e.g. its dynamic dimensions)
            # but not the graph. That is the request's fault, not the server's.
            if type(exc).__name__ != "InvalidArgument":
                raise
            raise ValidationError(
                f"the model rejected inputs of shape {list(batch.shape)}: {str(exc)[:200]}",
                problem="rejected_by_model",
            ) from exc
        latency = time.perf_counter() - start
        raw = np.asarray(raw, dtype=np.float32).reshape(len(batch), -1)
        probabilities = raw if self.outputs_probabilities else softmax(raw)
        return Prediction(
            classes=probabilities.argmax(axis=1), probabilities=probabilities, latency_s=latency
        )
