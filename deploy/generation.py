"""A ``causal-lm`` version served (DESIGN §3.8): the champion generates greedily with
onnxruntime-genai; a shadow rates the champion's tokens with one pass of its own graph over
prompt + answer (teacher forcing), which costs about one prefill, far less than generating.

:func:`validate_generate` checks a ``/generate`` body; :class:`Decoder` holds what a loaded
version needs to answer it (genai's model, the artifact's tokenizer) and to score another's
tokens (:func:`score_rows`, on the version's ONNX Runtime session).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.deploy.validation import ValidationError
from pruneguard.registry.decoder_graph import (
    GENAI_CONFIG,
    empty_cache_feeds,
    genai_model,
    head_size,
)
from pruneguard.registry.tasks import score_sequence, unpack_sequence

__all__ = ["Decoder", "Generation", "prompt_features", "score_rows", "validate_generate"]

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 64
DEFAULT_NEW_TOKENS = 64


def _fail(problem: str, message: str) -> ValidationError:
    return ValidationError(message, problem=problem)


def _check_text(value: Any, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _fail("dtype", f"{where} is a {type(value).__name__}; send a string")
    if len(value) > max_chars:
        raise _fail("text_length", f"{where} has {len(value)} characters, over the limit of "
                                   f"{max_chars}; shorten it")  # fmt: skip
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail("encoding", f"{where} is not valid UTF-8 (a lone surrogate at character "
                                f"{exc.start}); send UTF-8 text") from exc  # fmt: skip
    return value


def _messages(messages: Any, max_chars: int) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _fail("type", 'messages must be a non-empty JSON array of {"role", "content"}')
    if len(messages) > MAX_MESSAGES:
        raise _fail("batch_size", f"{len(messages)} messages exceed the limit of {MAX_MESSAGES}")
    out, total = [], 0
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise _fail("type", f'messages[{i}] must be {{"role": ..., "content": ...}} only')
        if message["role"] not in ROLES:
            raise _fail(
                "type", f"messages[{i}].role={message['role']!r}: one of {', '.join(ROLES)}"
            )
        content = _check_text(message["content"], f"messages[{i}].content", max_chars)
        total += len(content)
        out.append({"role": str(message["role"]), "content": content})
    if total > max_chars:
        raise _fail("text_length", f"the messages hold {total} characters, over the limit of "
                                   f"{max_chars}; shorten them")  # fmt: skip
    return out


def validate_generate(
    prompt: Any, messages: Any, max_new_tokens: Any, *, limit: int, max_chars: int
) -> tuple[list[dict[str, str]], int]:
    """The request as chat messages and a token budget, or a :class:`ValidationError`."""
    if (prompt is None) == (messages is None):
        raise _fail("type", 'send exactly one of "prompt" (a string) and "messages" '
                            '(a list of {"role", "content"})')  # fmt: skip
    if prompt is not None:
        text = _check_text(prompt, "prompt", max_chars)
        if not text.strip():
            raise _fail("text_length", "prompt is empty; send some text")
        chat = [{"role": "user", "content": text}]
    else:
        chat = _messages(messages, max_chars)
    budget = min(DEFAULT_NEW_TOKENS, limit) if max_new_tokens is None else max_new_tokens
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= limit:
        raise _fail("max_new_tokens", f"max_new_tokens={budget!r}: an integer from 1 to {limit} "
                                      "(the server's limit)")  # fmt: skip
    return chat, budget


@dataclass(frozen=True)
class Generation:
    """A greedy answer: its tokens, their text, and the times it took."""

    prompt: list[int]
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (end of sequence) or "length" (max_new_tokens reached)
    ttft_s: float
    latency_s: float


@dataclass(frozen=True)
class Decoder:
    """genai's model of an artifact folder, its tokenizer and its context length."""

    model: Any  # onnxruntime_genai.Model (generators on it may run in parallel threads)
    tokenizer: Any  # transformers tokenizer from the artifact's files
    context_length: int
    head_dim: int
    eos: frozenset[int]

    @classmethod
    def load(cls, folder: Path, *, threads: int) -> Decoder:
        from transformers import AutoTokenizer

        spec = json.loads((Path(folder) / GENAI_CONFIG).read_text())["model"]
        eos = spec.get("eos_token_id")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return cls(genai_model(folder, threads), tokenizer, int(spec["context_length"]), head_size(folder),
                   frozenset(eos if isinstance(eos, list) else [eos]))  # fmt: skip

    def prompt_ids(self, chat: list[dict[str, str]]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return [int(i) for i in encoded["input_ids"]]

    def generate(self, prompt: list[int], max_new_tokens: int) -> Generation:
        import onnxruntime_genai as og

        if len(prompt) + max_new_tokens > self.context_length:
            raise _fail("text_length", f"the prompt is {len(prompt)} tokens; with max_new_tokens="
                                       f"{max_new_tokens} it exceeds the model's context of "
                                       f"{self.context_length}: shorten it")  # fmt: skip
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + max_new_tokens, do_sample=False)
        generator = og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt)
        tokens: list[int] = []
        first = 0.0
        while not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
            first = first or time.perf_counter() - start
        latency = time.perf_counter() - start
        stop = bool(tokens) and tokens[-1] in self.eos
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(prompt, tokens, text, "stop" if stop else "length", first, latency)


def score_rows(session: Any, batch: np.ndarray, head_dim: int) -> np.ndarray:
    """``[n, 3]`` (token agreement, mean log-prob gap, tokens) for packed sequences
    (:func:`registry.tasks.pack_sequence`), each rated by ``session`` in one pass."""
    rows = []
    for packed in batch:
        ids, prompt_tokens = unpack_sequence(packed)
        feeds = empty_cache_feeds(session, ids[None, :], head_dim)
        (logits,) = session.run(["logits"], feeds)
        scores = score_sequence(_log_softmax(logits[0]), ids, prompt_tokens)
        rows.append([scores.agreement, scores.mean_gap, float(scores.agree.size)])
    return np.asarray(rows, dtype=np.float32).reshape(len(batch), 3)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def prompt_features(chat: list[dict[str, str]], generation: Generation, *, keep_chars: int) -> dict:
    """What the prediction log keeps of a request (as for texts: lengths, and the first
    ``keep_chars`` characters of the last user turn, 0: none)."""
    text = chat[-1]["content"]
    row: dict[str, Any] = {"chars": sum(len(m["content"]) for m in chat),
                           "tokens": len(generation.prompt), "truncated": False,
                           "answer_tokens": len(generation.tokens)}  # fmt: skip
    if keep_chars > 0:
        row["text"] = text[:keep_chars]
    return row
