"""Texts in: the checks a ``{"texts": [...]}`` request passes, and the artifact's tokenizer.

A text model's artifact carries its tokenizer (``tokenizer/tokenizer.json``, listed with its
sha256 under ``files``) and says in ``io.text`` how texts become inputs: truncated on the
right at ``max_length`` tokens, each batch padded to its longest text. :class:`TextEncoder`
applies that with the ``tokenizers`` library (the Rust tokenizer transformers itself uses),
in one call per batch.

A batch of texts travels inside the service as ONE int64 array ``[batch, n_inputs, seq]``
(the model's inputs stacked on axis 1, in ``io.inputs`` order), so the shadow, the sidecar's
wire format and the batching need nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.deploy.validation import ValidationError
from pruneguard.registry.errors import ArtifactError

__all__ = ["TEXT_FEATURES", "TextEncoder", "text_features", "validate_texts"]

# the encodings' fields that feed each input name the model may have
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
TEXT_FEATURES = ("chars", "tokens", "truncated")


def _fail(problem: str, message: str) -> ValidationError:
    return ValidationError(message, problem=problem)


def validate_texts(texts: Any, *, max_texts: int, max_chars: int) -> list[str]:
    """``texts`` as a list of strings, or a :class:`ValidationError` naming the problem."""
    if not isinstance(texts, list):
        raise _fail("type", f"texts must be a JSON array of strings, got {type(texts).__name__}")
    if not texts:
        raise _fail("batch_size", "texts is empty; send at least one text")
    if len(texts) > max_texts:
        raise _fail(
            "batch_size",
            f"{len(texts)} texts exceed the limit of {max_texts} per request; "
            "split the request into smaller batches",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _fail("dtype", f"texts[{i}] is a {type(text).__name__}; every text is a string")
        if len(text) > max_chars:
            raise _fail(
                "text_length",
                f"texts[{i}] has {len(text)} characters, over the limit of {max_chars}; "
                "shorten it or split it",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _fail(
                "encoding",
                f"texts[{i}] is not valid UTF-8 (a lone surrogate at character {exc.start}); "
                "send UTF-8 text",
            ) from exc
    return texts


@dataclass(frozen=True)
class TextEncoder:
    """The artifact's tokenizer, set up as ``io.text`` says, for the model's input names."""

    tokenizer: Any  # tokenizers.Tokenizer (thread-safe for encode_batch)
    input_names: tuple[str, ...]
    max_length: int

    @classmethod
    def load(
        cls, artifact: Path, spec: Mapping[str, Any], input_names: Sequence[str]
    ) -> TextEncoder:
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError as exc:
            raise ArtifactError(
                "serving a text model needs the tokenizers package: `pip install tokenizers`"
            ) from exc
        unknown = [n for n in input_names if n not in _FIELDS]
        if unknown:
            raise ArtifactError(
                f"text model inputs {unknown} are not produced by a tokenizer (known: "
                f"{', '.join(_FIELDS)}); export the model with those inputs"
            )
        path = artifact / str(spec.get("tokenizer", ""))
        if not path.is_file() or artifact not in path.resolve().parents:
            raise ArtifactError(
                f"{artifact}: io.text.tokenizer {spec.get('tokenizer')!r} is not a file in the "
                "artifact; rebuild it with `pruneguard prune`"
            )
        tokenizer = Tokenizer.from_file(str(path))
        max_length = int(spec["max_length"])
        tokenizer.enable_truncation(max_length, direction="right")
        tokenizer.enable_padding(
            direction="right", pad_id=int(spec["pad_token_id"]), pad_token=str(spec["pad_token"])
        )
        return cls(tokenizer, tuple(input_names), max_length)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Any]]:
        """``[batch, n_inputs, seq]`` int64 and the encodings (for :func:`text_features`)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        stacked = np.stack(
            [
                np.asarray([getattr(e, _FIELDS[name]) for e in encodings], dtype=np.int64)
                for name in self.input_names
            ],
            axis=1,
        )
        return stacked, encodings

    def feeds(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The session's inputs from a stacked batch."""
        return {name: np.ascontiguousarray(batch[:, i]) for i, name in enumerate(self.input_names)}


def text_features(
    texts: Sequence[str], encodings: Sequence[Any], *, keep_chars: int
) -> list[dict[str, Any]]:
    """What the prediction log keeps of each text: its length in characters and tokens,
    whether it was truncated, and its first ``keep_chars`` characters (0: none, for privacy)."""
    rows = []
    for text, enc in zip(texts, encodings, strict=True):
        tokens = int(sum(enc.attention_mask))
        row: dict[str, Any] = {
            "chars": len(text),
            "tokens": tokens,
            "truncated": bool(enc.overflowing),
        }
        if keep_chars > 0:
            row["text"] = text[:keep_chars]
        rows.append(row)
    return rows
