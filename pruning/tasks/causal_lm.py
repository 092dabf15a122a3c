"""The causal-lm task: a decoder judged on held-out text and on the dense model's answers.

Quality figures, all on data that scoring and recovery never see:

- **perplexity** on the held-out paraphrase sentences (``pruning/data/paraphrases.tsv``, both
  sides), next-token loss over real tokens;
- **teacher-forced agreement** on the held-out chat prompts (``chat_heldout.txt``): the dense
  model answers each greedily; the share of those answer tokens the pruned model ranks first,
  and its mean log-probability gap on them (:func:`registry.tasks.score_tokens`);
- **shadow agreement**: the same measure the other way round, as serving sees it (the pruned
  model answers, the dense model scores): the offline value the agent compares a window with.

Recovery (:func:`distill`) matches the dense model's next-token distributions (KL) on the
dense model's own answers to the training chat prompts (sequence-level) and on plain text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pruneguard.pruning.methods.decoder import CausalLM
from pruneguard.pruning.methods.decoder_scores import Batch, lm_loss, logits_of, next_token_kl
from pruneguard.registry.tasks import TokenScores, score_sequence

__all__ = [
    "Answer",
    "LMEval",
    "answer",
    "batches",
    "chat_ids",
    "distill",
    "document_start",
    "evaluate",
    "held_out_prompts",
    "held_out_sentences",
    "next_token_accuracy",
    "padding_id",
    "perplexity",
    "score_answer",
    "teacher_forced",
    "text_sequences",
    "train_prompts",
]


@dataclass(frozen=True)
class Answer:
    """A prompt's token ids and the greedy continuation a model gave it."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]

    @property
    def sequence(self) -> list[int]:
        return [*self.prompt, *self.tokens]


@dataclass(frozen=True)
class LMEval:
    """A decoder's quality figures against the dense model."""

    perplexity: float
    agreement: float  # share of the dense answers' tokens this model ranks first
    logprob_gap: float  # its mean log-prob gap on those tokens (0 for the dense model)
    shadow_agreement: float  # its own answers scored by the dense model (as served)
    shadow_logprob_gap: float
    # the same, averaged per answer (as the agent averages a window's requests)
    shadow_agreement_per_request: float = float("nan")
    shadow_logprob_gap_per_request: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "perplexity": self.perplexity,
            "teacher_forced_agreement": self.agreement,
            "teacher_forced_logprob_gap": self.logprob_gap,
            "shadow_token_agreement": self.shadow_agreement,
            "shadow_logprob_gap": self.shadow_logprob_gap,
            "shadow_token_agreement_per_request": self.shadow_agreement_per_request,
            "shadow_logprob_gap_per_request": self.shadow_logprob_gap_per_request,
        }


def _lines(name: str) -> list[str]:
    from pruneguard.pruning.text import load_sentences

    return load_sentences(name)


def held_out_prompts() -> list[str]:
    return _lines("chat_heldout.txt")


def train_prompts() -> list[str]:
    return _lines("chat_train.txt")


def held_out_sentences() -> list[str]:
    from pruneguard.pruning.text import load_paraphrases

    return [s for pair in load_paraphrases() for s in pair]


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt as one user turn of the model's chat template, ready for the answer."""
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


@torch.no_grad()
def answer(
    model: CausalLM, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int
) -> list[Answer]:
    """Greedy answers, one prompt at a time (no padding, so nothing depends on batch)."""
    answers = []
    for prompt in prompts:
        ids = chat_ids(tokenizer, prompt)
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=padding_id(tokenizer),
        )
        answers.append(Answer(tuple(ids), tuple(int(t) for t in out[0, len(ids) :])))
    return answers


def padding_id(tokenizer: Any) -> int:
    """The id that fills padded positions (never counted): the pad token, else EOS, else 0
    (Llama tokenizers have no pad token)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def batches(sequences: Sequence[Sequence[int]], *, size: int, pad_id: int) -> list[Batch]:
    """Right-padded ``(input_ids, attention_mask)`` batches, sequences sorted by length."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = []
    for start in range(0, len(order), size):
        chunk = [list(sequences[i]) for i in order[start : start + size]]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        out.append((ids, mask))
    return out


DOCUMENT_SEPARATORS = ("<|endoftext|>", "</s>", "<s>")


def document_start(tokenizer: Any) -> list[int]:
    """What a plain text starts with, as in pre-training: nothing when the tokenizer adds its
    own BOS, else its document separator (``<|endoftext|>`` for SmolLM2 and Qwen), so that the
    first word is predicted like any other."""
    probe = tokenizer("a")["input_ids"]
    if tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id:
        return []
    vocab = tokenizer.get_vocab()
    return next(([vocab[t]] for t in DOCUMENT_SEPARATORS if t in vocab), [])


def text_sequences(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Plain texts as token ids, each after :func:`document_start`."""
    start = document_start(tokenizer)
    return [[*start, *tokenizer(t)["input_ids"]] for t in texts]


@torch.no_grad()
def perplexity(model: CausalLM, data: Sequence[Batch]) -> float:
    """exp of the mean next-token loss over every real token of ``data``."""
    total, count = 0.0, 0
    for batch in data:
        logits = logits_of(model, batch)
        tokens = int(batch[1][:, 1:].sum())
        total += float(lm_loss(logits, batch)) * tokens
        count += tokens
    return float(np.exp(total / max(count, 1)))


@torch.no_grad()
def next_token_accuracy(model: CausalLM, data: Sequence[Batch]) -> float:
    """The share of real next tokens of ``data`` that ``model`` ranks first."""
    hits, count = 0, 0
    for ids, mask in data:
        first = logits_of(model, (ids, mask))[:, :-1].argmax(-1)
        real = mask[:, 1:].bool()
        hits += int(((first == ids[:, 1:]) & real).sum())
        count += int(real.sum())
    return hits / max(count, 1)


@torch.no_grad()
def teacher_forced(scorer: CausalLM, answers: Sequence[Answer]) -> TokenScores:
    """``scorer`` rating each answer's tokens, given the prompt and the answer so far."""
    agree, gap = [], []
    for item in answers:
        if not item.tokens:
            continue
        ids = torch.tensor([item.sequence])
        logits = scorer(input_ids=ids, use_cache=False).logits[0]
        scores = score_answer(logits.log_softmax(-1).numpy(), item)
        agree.append(scores.agree)
        gap.append(scores.gap)
    if not agree:
        return TokenScores(np.zeros(0, dtype=bool), np.zeros(0))
    return TokenScores(np.concatenate(agree), np.concatenate(gap))


def score_answer(logprobs: np.ndarray, item: Answer) -> TokenScores:
    """``item``'s answer tokens rated from a scorer's ``logprobs [seq, vocab]`` over its
    prompt + answer (the row of one sequence, from torch or from ONNX Runtime)."""
    sequence = np.array(item.sequence, dtype=np.int64)
    return score_sequence(logprobs[: len(sequence)], sequence, len(item.prompt))


def evaluate(
    model: CausalLM,
    dense: CausalLM,
    tokenizer: Any,
    *,
    text: Sequence[Batch],
    dense_answers: Sequence[Answer],
    prompts: Sequence[str],
    max_new_tokens: int,
) -> LMEval:
    """``model``'s figures against ``dense`` (pass the dense model twice for its own)."""
    forward = teacher_forced(model, dense_answers)
    own = answer(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    each = [teacher_forced(dense, [a]) for a in own if a.tokens]
    served = teacher_forced(dense, own)
    return LMEval(
        perplexity=perplexity(model, text),
        agreement=forward.agreement,
        logprob_gap=forward.mean_gap,
        shadow_agreement=served.agreement,
        shadow_logprob_gap=served.mean_gap,
        shadow_agreement_per_request=float(np.mean([s.agreement for s in each])),
        shadow_logprob_gap_per_request=float(np.mean([s.mean_gap for s in each])),
    )


def distill(
    student: CausalLM,
    teacher: CausalLM,
    data: Sequence[Batch],
    *,
    epochs: int,
    lr: float,
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
) -> float:
    """Train ``student`` towards ``teacher``'s next-token distributions (KL over real
    positions); returns the minutes it took."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    started = time.perf_counter()
    student.train()
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(data), generator=generator).tolist()
            total = 0.0
            for index in order:
                ids, mask = data[index]
                with torch.no_grad():
                    target = logits_of(teacher, (ids, mask))
                logits = logits_of(student, (ids, mask))
                loss = next_token_kl(logits, target, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            say(f"recovery epoch {epoch + 1}/{epochs}: KL {total / max(len(data), 1):.4f}")
    finally:
        student.eval()
    return (time.perf_counter() - started) / 60.0
