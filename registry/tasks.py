"""What a version's outputs mean, and how two versions' answers are compared (DESIGN §3.8).

A manifest's ``io.task`` names the task; artifacts written before it existed have none and
read as ``classification``. Each task is one small object with three pure methods:

- ``decode(raw)``: the model's raw output rows → :class:`Decoded` (a class per row, or -1,
  and the output vector per row: class probabilities, or the embedding);
- ``compare(champion, shadow)``: two decoded answers to the same rows → :class:`Paired`
  (per row: agree, a distance in [0, 1] and a similarity);
- ``body(decoded)``: the part of a ``/predict`` response that carries the answer.

A ``causal-lm`` version answers ``/generate`` with tokens; its shadow rates them by teacher
forcing (:func:`score_sequence`, one pass of the dense graph over prompt + answer), so what
the shadow "outputs" per request is the row ``[token agreement, mean log-prob gap, tokens
scored]`` (:class:`CausalLM`), and what travels to it is the packed sequence
(:func:`pack_sequence`).

``deploy`` (shadow comparison, metrics, responses) and ``agent`` (checks) both go through
:func:`task_for`; nothing else decodes or compares outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pruneguard.registry.errors import ArtifactError

__all__ = [
    "CAUSAL_LM",
    "CLASSIFICATION",
    "EMBEDDING",
    "EMBEDDING_AGREE_COSINE",
    "TASKS",
    "CausalLM",
    "Decoded",
    "Paired",
    "Task",
    "TokenScores",
    "pack_sequence",
    "score_sequence",
    "score_tokens",
    "softmax",
    "task_for",
    "task_name",
    "text_spec",
    "unpack_sequence",
]

CLASSIFICATION = "classification"
EMBEDDING = "embedding"
CAUSAL_LM = "causal-lm"  # served on /generate; the shadow scores the champion's tokens
TASKS = (CLASSIFICATION, EMBEDDING, CAUSAL_LM)
# Champion and shadow embeddings of one request "agree" at this cosine or above; the
# agreement counter then means the same thing for every task (same answer, near enough).
EMBEDDING_AGREE_COSINE = 0.9


@dataclass(frozen=True)
class Decoded:
    """A batch's answer."""

    classes: np.ndarray  # [batch] int64: the class, or -1 where the task has none
    outputs: np.ndarray  # [batch, k] float32: class probabilities, or the embedding


@dataclass(frozen=True)
class Paired:
    """Champion vs shadow on the same rows."""

    agree: np.ndarray  # [batch] bool
    distance: np.ndarray  # [batch] float64 in [0, 1]
    similarity: np.ndarray  # [batch] float64: 1 − distance (classification), cosine (embedding)


class Task(Protocol):
    @property
    def name(self) -> str: ...

    def decode(self, raw: np.ndarray) -> Decoded: ...

    def compare(self, champion: Decoded, shadow: Decoded) -> Paired: ...

    def body(self, decoded: Decoded) -> dict[str, Any]: ...


def _same_shape(champion: Decoded, shadow: Decoded, what: str) -> None:
    if champion.outputs.shape != shadow.outputs.shape:
        raise ValueError(
            f"champion {what} {list(champion.outputs.shape)} and shadow "
            f"{list(shadow.outputs.shape)} differ in shape, so the two versions cannot be "
            "compared: make the shadow a version of the same model"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Classification:
    """Class probabilities; agreement is the same class, distance is total variation."""

    outputs_probabilities: bool = False  # the graph ends in a softmax already
    name: str = CLASSIFICATION

    def decode(self, raw: np.ndarray) -> Decoded:
        raw = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        probabilities = raw if self.outputs_probabilities else softmax(raw)
        return Decoded(probabilities.argmax(axis=1).astype(np.int64), probabilities)

    def compare(self, champion: Decoded, shadow: Decoded) -> Paired:
        _same_shape(champion, shadow, "probabilities")
        diff = np.abs(champion.outputs.astype(np.float64) - shadow.outputs)
        distance = np.clip(0.5 * diff.sum(axis=1), 0.0, 1.0)
        return Paired(champion.classes == shadow.classes, distance, 1.0 - distance)

    def body(self, decoded: Decoded) -> dict[str, Any]:
        return {
            "predictions": decoded.classes.tolist(),
            "probabilities": decoded.outputs.tolist(),
        }


@dataclass(frozen=True)
class Embedding:
    """A vector per row; two answers are compared by cosine."""

    normalize: bool = False  # L2-normalise here (the graph does not)
    name: str = EMBEDDING

    def decode(self, raw: np.ndarray) -> Decoded:
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return Decoded(np.full(len(vectors), -1, dtype=np.int64), vectors)

    def compare(self, champion: Decoded, shadow: Decoded) -> Paired:
        _same_shape(champion, shadow, "embeddings")
        a, b = champion.outputs.astype(np.float64), shadow.outputs.astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.clip((a * b).sum(axis=1) / np.maximum(norms, 1e-12), -1.0, 1.0)
        return Paired(cosine >= EMBEDDING_AGREE_COSINE, (1.0 - cosine) / 2.0, cosine)

    def body(self, decoded: Decoded) -> dict[str, Any]:
        return {"embeddings": decoded.outputs.tolist()}


@dataclass(frozen=True)
class TokenScores:
    """One model scoring another's generated tokens by teacher forcing (causal-lm)."""

    agree: np.ndarray  # [tokens] bool: the token is the scorer's own first choice
    gap: np.ndarray  # [tokens] float64 >= 0: scorer's top log-prob − its log-prob of the token

    @property
    def agreement(self) -> float:
        return float(self.agree.mean()) if self.agree.size else float("nan")

    @property
    def mean_gap(self) -> float:
        return float(self.gap.mean()) if self.gap.size else float("nan")


def score_tokens(logprobs: np.ndarray, tokens: np.ndarray) -> TokenScores:
    """How a scorer rates ``tokens [T]`` given its next-token ``logprobs [T, vocab]`` at the
    positions that predicted them. The same measure offline (the pruned model scoring the
    dense model's continuations) and in serving (the dense shadow scoring the champion's)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.int64)
    if logprobs.ndim != 2 or len(logprobs) != len(tokens):
        raise ValueError(
            f"logprobs {list(logprobs.shape)} and tokens {list(tokens.shape)}: expected "
            "[T, vocab] and [T]"
        )
    rows = np.arange(len(tokens))
    top = logprobs.max(axis=1)
    return TokenScores(
        logprobs.argmax(axis=1) == tokens, np.maximum(top - logprobs[rows, tokens], 0.0)
    )


def score_sequence(logprobs: np.ndarray, sequence: np.ndarray, prompt_tokens: int) -> TokenScores:
    """The answer tokens of ``sequence [L]`` (after its first ``prompt_tokens``) rated from a
    scorer's ``logprobs [L, vocab]`` over the whole sequence (one pass, teacher forcing)."""
    if not 0 < prompt_tokens <= len(sequence):
        raise ValueError(f"prompt_tokens={prompt_tokens} for a sequence of {len(sequence)}")
    start = prompt_tokens - 1  # the position that predicts the first answer token
    return score_tokens(logprobs[start : len(sequence) - 1], sequence[prompt_tokens:])


def pack_sequence(prompt: list[int], answer: list[int]) -> np.ndarray:
    """``[1, 1 + L]`` int64: the prompt's length, then prompt + answer: a request as the
    shadow receives it (rows of one length batch together)."""
    return np.array([[len(prompt), *prompt, *answer]], dtype=np.int64)


def unpack_sequence(row: np.ndarray) -> tuple[np.ndarray, int]:
    """(prompt + answer ids, prompt length) of a :func:`pack_sequence` row."""
    row = np.asarray(row, dtype=np.int64)
    prompt_tokens = int(row[0])
    if not 0 < prompt_tokens < len(row):
        raise ValueError(f"a packed sequence of {len(row) - 1} tokens cannot have a "
                         f"{prompt_tokens}-token prompt")  # fmt: skip
    return row[1:], prompt_tokens


@dataclass(frozen=True)
class CausalLM:
    """A shadow's rating of the champion's generated tokens, per request: ``[agreement,
    mean log-prob gap, tokens]``. The two "agree" when every token was the dense model's own
    first choice; the distance is the share it would have chosen otherwise."""

    name: str = CAUSAL_LM

    def decode(self, raw: np.ndarray) -> Decoded:
        scores = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        return Decoded(np.full(len(scores), -1, dtype=np.int64), scores)

    def compare(self, champion: Decoded, shadow: Decoded) -> Paired:
        agreement = shadow.outputs[:, 0].astype(np.float64)
        return Paired(agreement >= 1.0, 1.0 - agreement, agreement)

    def body(self, decoded: Decoded) -> dict[str, Any]:
        return {"token_scores": decoded.outputs.tolist()}


def task_name(manifest: Mapping[str, Any]) -> str:
    """``io.task`` of a manifest; ``classification`` when absent (artifacts before §3.8)."""
    io = manifest.get("io") or {}
    name = io.get("task", CLASSIFICATION) if isinstance(io, Mapping) else CLASSIFICATION
    if name not in TASKS:
        raise ArtifactError(
            f"manifest io.task is {name!r}; expected one of {', '.join(TASKS)}: rebuild the "
            "artifact with `pruneguard prune`"
        )
    return str(name)


def task_for(manifest: Mapping[str, Any], *, output_name: str = "") -> Task:
    """The task object of a manifest. ``output_name`` (the graph's first output) tells a
    classifier that ends in a softmax (``prob`` in the name) from one that gives logits."""
    name = task_name(manifest)
    if name == CLASSIFICATION:
        return Classification(outputs_probabilities="prob" in output_name.lower())
    if name == EMBEDDING:
        spec = manifest["io"].get("embedding") or {}
        return Embedding(normalize=not spec.get("normalized", True))
    return CausalLM()


def text_spec(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """``io.text`` (tokenizer file, max length, truncation) of a text model, else None."""
    spec = (manifest.get("io") or {}).get("text")
    return dict(spec) if isinstance(spec, Mapping) else None
