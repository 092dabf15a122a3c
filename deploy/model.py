"""One loaded model version: an ONNX Runtime session, its manifest's io spec and task, and
(for a text model) its tokenizer, (for a decoder) its generator (:mod:`deploy.generation`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.deploy.generation import Decoder, score_rows
from pruneguard.deploy.text import TextEncoder
from pruneguard.deploy.validation import InputSpec, ValidationError, input_specs, validate_inputs
from pruneguard.registry.artifact import MODEL, read_manifest
from pruneguard.registry.errors import ArtifactError
from pruneguard.registry.tasks import CAUSAL_LM, Decoded, Task, task_for, task_name, text_spec

__all__ = ["LoadedModel", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """A batch's answer as its task decodes it (:mod:`registry.tasks`), and the session's time."""

    classes: np.ndarray  # [batch] int64: the class, or -1 where the task has none
    outputs: np.ndarray  # [batch, k] float32: class probabilities, or the embedding
    latency_s: float

    @property
    def decoded(self) -> Decoded:
        return Decoded(self.classes, self.outputs)


@dataclass(frozen=True)
class LoadedModel:
    """A servable version. Immutable: a swap replaces the whole object."""

    tag: str
    path: Path  # the artifact directory (a shadow process opens its own session from it)
    kind: str
    manifest: dict[str, Any]
    spec: InputSpec  # the first input (a text model's input_ids)
    output_name: str
    task: Task
    session: Any  # onnxruntime.InferenceSession (thread-safe for run())
    text: TextEncoder | None = None  # set for a model that takes texts
    decoder: Decoder | None = None  # set for a causal-lm version (answers /generate)

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
        (on zeros, or on a text), so a graph that cannot run is refused before it serves."""
        import onnxruntime as ort

        manifest = read_manifest(path)
        specs = input_specs(manifest)
        text_io = text_spec(manifest)
        text = TextEncoder.load(Path(path), text_io, [s.name for s in specs]) if text_io else None
        decoder = None
        if task_name(manifest) == CAUSAL_LM:
            decoder = _load_decoder(Path(path), tag, threads)
        elif text is None and len(specs) != 1:
            raise ArtifactError(
                f"{tag}: {len(specs)} inputs and no io.text; pruneguard serves one tensor input, "
                "or a text model's tokenizer inputs"
            )
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
            spec=specs[0],
            output_name=output_name,
            task=task_for(manifest, output_name=output_name),
            session=session,
            text=text,
            decoder=decoder,
        )
        model._smoke_test()
        return model

    def _smoke_test(self) -> None:
        if self.decoder is not None:
            self._smoke_test_decoder(self.decoder)
            return
        if self.text is not None:
            batch = self.encode(["pruneguard checks that this model runs."])[0]
        else:
            row = [1 if isinstance(dim, str) else dim for dim in self.spec.shape[1:]]
            batch = np.zeros([1, *row], dtype=self.spec.dtype)
        try:
            out = self.predict(batch)
        except Exception as exc:
            raise ArtifactError(f"{self.tag}: a test inference failed: {exc}") from exc
        n = self.n_classes
        if out.outputs.ndim != 2 or (n is not None and out.outputs.shape[1] != n):
            raise ArtifactError(
                f"{self.tag}: output {self.output_name} has shape {list(out.outputs.shape)}, "
                f"expected [batch, {n}] from the manifest's class_labels"
            )

    def _smoke_test_decoder(self, decoder: Decoder) -> None:
        """Generate two tokens and score them, as serving will."""
        from pruneguard.registry.tasks import pack_sequence

        try:
            prompt = decoder.prompt_ids([{"role": "user", "content": "Hello."}])
            answer = decoder.generate(prompt, 2)
            scores = self.predict(pack_sequence(prompt, answer.tokens)).outputs
        except Exception as exc:
            raise ArtifactError(f"{self.tag}: a test generation failed: {exc}") from exc
        if scores.shape != (1, 3) or scores[0, 2] != len(answer.tokens):
            raise ArtifactError(f"{self.tag}: scoring its own tokens gave {scores.tolist()}")

    def validate(self, inputs: Any, *, max_batch: int) -> np.ndarray:
        if self.decoder is not None:
            raise ValidationError(
                f'{self.name} is a language model: POST /generate {{"prompt": "..."}}, not '
                "/predict",
                problem="task",
            )
        if self.text is not None:
            raise ValidationError(
                f'{self.name} is a text model: send {{"texts": ["..."]}}, not inputs',
                problem="type",
            )
        return validate_inputs(inputs, self.spec, max_batch=max_batch)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[Any]]:
        """Tokenized ``texts`` as one stacked batch (see :mod:`deploy.text`)."""
        if self.decoder is not None:
            self.validate(None, max_batch=0)  # the same 400: this model answers /generate
        if self.text is None:
            raise ValidationError(
                f'{self.name} takes tensors: send {{"inputs": rows shaped '
                f"{self.spec.row_shape_text()}}}, not texts",
                problem="type",
            )
        return self.text.encode(texts)

    def predict(self, batch: np.ndarray) -> Prediction:
        """The task's answer to ``batch``; for a decoder, its rating of packed sequences
        (another version's tokens, :func:`deploy.generation.score_rows`)."""
        if self.decoder is not None:
            start = time.perf_counter()
            decoded = self.task.decode(score_rows(self.session, batch, self.decoder.head_dim))
            return Prediction(decoded.classes, decoded.outputs, time.perf_counter() - start)
        feeds = self.text.feeds(batch) if self.text is not None else {self.spec.name: batch}
        start = time.perf_counter()
        try:
            (raw,) = self.session.run([self.output_name], feeds)
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
        decoded = self.task.decode(np.asarray(raw).reshape(len(batch), -1))
        return Prediction(classes=decoded.classes, outputs=decoded.outputs, latency_s=latency)


def _load_decoder(path: Path, tag: str, threads: int) -> Decoder:
    try:
        return Decoder.load(path, threads=threads)
    except Exception as exc:  # genai and transformers raise their own types
        raise ArtifactError(f"{tag}: onnxruntime-genai cannot load this decoder: {exc}") from exc
