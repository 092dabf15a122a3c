"""The causal-lm task's measures and recovery, on a small random Llama."""

from __future__ import annotations

import copy

import pytest
import torch

from pruneguard.pruning.methods import decoder as dec
from pruneguard.pruning.methods import decoder_scores as ds
from pruneguard.pruning.tasks import causal_lm as lm

from .test_decoder import logits, tiny_llama


def greedy(model, prompt: list[int], steps: int) -> lm.Answer:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, pad_token_id=0
        )
    return lm.Answer(tuple(prompt), tuple(int(t) for t in out[0, len(prompt) :]))


def test_the_dense_model_agrees_with_itself_and_a_cut_model_less() -> None:
    dense = tiny_llama()
    answers = [greedy(dense, [3, 9, 4], 8), greedy(dense, [7, 1], 8)]
    own = lm.teacher_forced(dense, answers)
    assert own.agree.shape == (16,)
    assert own.agreement == 1.0 and own.mean_gap == pytest.approx(0.0, abs=1e-6)
    cut = dec.apply_plan(copy.deepcopy(dense), dec.DecoderPlan(kv_groups=((0,), (0,), (0,))))
    other = lm.teacher_forced(cut, answers)
    assert other.agreement < 1.0 and other.mean_gap > 0.0


def test_batches_pad_on_the_right_and_perplexity_ignores_padding() -> None:
    model = tiny_llama()
    sequences = [[5, 6, 7, 8, 9], [1, 2, 3]]
    padded = lm.batches(sequences, size=2, pad_id=0)
    ((ids, mask),) = padded
    assert ids.tolist() == [[1, 2, 3, 0, 0], [5, 6, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    alone = lm.batches(sequences, size=1, pad_id=0)
    assert lm.perplexity(model, padded) == pytest.approx(lm.perplexity(model, alone), rel=1e-5)
    assert lm.perplexity(model, padded) > 1.0


def test_distillation_brings_a_cut_model_back_towards_the_dense_one() -> None:
    dense = tiny_llama()
    generator = torch.Generator().manual_seed(4)
    sequences = [torch.randint(0, 97, (10,), generator=generator).tolist() for _ in range(12)]
    data = lm.batches(sequences, size=4, pad_id=0)
    student = dec.apply_plan(copy.deepcopy(dense), dec.DecoderPlan(kv_groups=((1,), (0,), (1,))))

    def kl() -> float:
        with torch.no_grad():
            return float(
                torch.stack(
                    [ds.next_token_kl(logits(student, b), logits(dense, b), b[1]) for b in data]
                ).mean()
            )

    teacher = {k: v.clone() for k, v in dense.state_dict().items()}
    before = kl()
    minutes = lm.distill(student, dense, data, epochs=15, lr=3e-3, seed=0)
    assert kl() < 0.5 * before
    assert minutes > 0.0 and not student.training
    assert all(torch.equal(v, teacher[k]) for k, v in dense.state_dict().items())


def test_held_out_prompts_and_sentences_are_never_trained_on() -> None:
    from pruneguard.pruning.text import load_sentences

    held, train = lm.held_out_prompts(), lm.train_prompts()
    assert len(held) >= 30 and len(train) >= 60
    assert not {p.lower() for p in held} & {p.lower() for p in train}
    assert not set(lm.held_out_sentences()) & set(load_sentences())


def test_padding_falls_back_to_eos_then_zero_for_tokenizers_without_a_pad_token() -> None:
    from types import SimpleNamespace

    assert lm.padding_id(SimpleNamespace(pad_token_id=0, eos_token_id=2)) == 0
    assert lm.padding_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert lm.padding_id(SimpleNamespace(pad_token_id=None, eos_token_id=None)) == 0
