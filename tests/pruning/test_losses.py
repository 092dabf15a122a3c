"""The distillation losses of the text tasks: zero at the teacher, and each term pulls the
student the way it should (token states for encoders, the class distribution too for
classifiers)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hf_models import make_hf_folder

from pruneguard.pruning.tasks.losses import HiddenStates, HiddenStatesAndLogits, hidden_mse

pytest.importorskip("transformers")


def _classifier(tmp_path: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from pruneguard.pruning.text import load_classifier, tokenize

    folder = make_hf_folder(tmp_path / "bert", "bert")
    model, tokenizer, _ = load_classifier(folder, ["a", "b", "c"])
    batch = tokenize(tokenizer, ["the team won", "salty soup tonight", "reboot it"], max_length=16)
    return model.eval(), batch


def test_hidden_mse_counts_real_tokens_only() -> None:
    student, teacher = torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)
    student[0, 3] = 10.0  # a padded position: must not count
    student[0, 0] = 1.0
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0]])}
    assert hidden_mse(student, teacher, batch).item() == pytest.approx(2 * 1.0 / (3 * 2))


def test_both_losses_are_zero_at_the_teacher_and_grow_away_from_it(tmp_path: Path) -> None:
    teacher, batch = _classifier(tmp_path)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for loss in (HiddenStates(), HiddenStatesAndLogits()):
            assert loss.loss(student, batch, loss.targets(teacher, batch)).item() == pytest.approx(
                0.0, abs=1e-6
            )
        # a different head: the token states still match, the answers do not
        student.bert.classifier.weight.normal_(0.0, 1.0)
        hidden, both = HiddenStates(), HiddenStatesAndLogits()
        assert hidden.loss(student, batch, hidden.targets(teacher, batch)).item() == pytest.approx(
            0.0, abs=1e-6
        )
        assert both.loss(student, batch, both.targets(teacher, batch)).item() > 1e-3


def test_the_logit_term_trains_the_head_towards_the_teacher(tmp_path: Path) -> None:
    teacher, batch = _classifier(tmp_path)
    student = copy.deepcopy(teacher)
    loss = HiddenStatesAndLogits()
    with torch.no_grad():
        teacher.bert.classifier.weight.normal_(0.0, 1.0)  # answers far from uniform
        student.bert.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        targets = loss.targets(teacher, batch)
    optimizer = torch.optim.Adam(student.bert.classifier.parameters(), lr=1e-2)
    first = loss.loss(student, batch, targets).item()
    for _ in range(50):
        optimizer.zero_grad()
        value = loss.loss(student, batch, targets)
        value.backward()
        optimizer.step()
    assert value.item() < 0.2 * first
    with torch.no_grad():
        assert torch.equal(student(**batch).argmax(1), teacher(**batch).argmax(1))
