"""What recovery distils from the dense teacher, per task (the task adapter's
``distill_loss``).

A loss has two halves: ``targets(teacher, batch)`` is computed once per training batch, before
recovery starts (the teacher does not change), and ``loss(student, batch, targets)`` is the
tensor the optimiser steps on.

- :class:`HiddenStates`: MSE between the student's and the teacher's last-layer token hidden
  states, over real (unpadded) tokens. An encoder's embedding is pooled from them.
- :class:`HiddenStatesAndLogits`: that, plus the KL divergence of the student's class
  distribution from the teacher's at a temperature (Hinton et al.; DistilBERT). A
  classifier's head reads the encoder through its pooler, so matching token states alone
  leaves the answer itself undistilled.
- :class:`LabelsAndLogits`: a tensor classifier's loss on labelled rows: cross-entropy,
  mixed with the KL divergence from the teacher's class distribution when there is a
  teacher (:func:`distillation_loss`). Its batches are ``(inputs, labels)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

__all__ = [
    "DistillLoss",
    "HiddenStates",
    "HiddenStatesAndLogits",
    "LabelsAndLogits",
    "distillation_loss",
    "hidden_mse",
]

Batch = Mapping[str, "torch.Tensor"]  # a text batch; a tensor batch is (inputs, labels)


class DistillLoss(Protocol):
    def targets(self, teacher: Any, batch: Any) -> Any: ...

    def loss(self, student: Any, batch: Any, targets: Any) -> torch.Tensor: ...

    def as_dict(self) -> dict[str, Any]:
        """What the manifest records of the loss (``pruning.distillation``)."""
        ...


def _kl(logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher ‖ student) of the class distributions softened by temperature ``t``."""
    import torch.nn.functional as F

    return F.kl_div(
        F.log_softmax(logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy, mixed with ``alpha`` × KL(teacher ‖ student) on logits softened by T.

    The KL term is scaled by T² so its gradients keep their size as T changes (Hinton et al.).
    """
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None:
        return ce
    t = temperature
    return (1.0 - alpha) * ce + alpha * _kl(logits, teacher_logits, t) * t * t


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean squared difference of token hidden states over the batch's real tokens."""
    mask = batch["attention_mask"].unsqueeze(-1).to(student.dtype)
    diff = (student - teacher) * mask
    return diff.pow(2).sum() / (mask.sum() * diff.shape[-1])


class HiddenStates:
    """Token hidden-state MSE to the teacher (sentence encoders)."""

    def targets(self, teacher: Any, batch: Batch) -> Any:
        return teacher.hidden(**batch)

    def as_dict(self) -> dict[str, Any]:
        return {"loss": "hidden_states_mse"}

    def loss(self, student: Any, batch: Batch, targets: Any) -> torch.Tensor:
        return hidden_mse(student.hidden(**batch), targets, batch)


@dataclass(frozen=True)
class HiddenStatesAndLogits:
    """Token hidden-state MSE plus ``weight`` × T²·KL(teacher ‖ student) of the class
    distributions at temperature T (text classifiers: the student needs ``hidden_and_logits``)."""

    temperature: float = 2.0
    weight: float = 1.0

    def targets(self, teacher: Any, batch: Batch) -> Any:
        return teacher.hidden_and_logits(**batch)

    def as_dict(self) -> dict[str, Any]:
        return {"loss": "hidden_states_mse + logits_kl", "temperature": self.temperature,
                "kl_weight": self.weight}  # fmt: skip

    def loss(self, student: Any, batch: Batch, targets: Any) -> torch.Tensor:
        hidden, logits = student.hidden_and_logits(**batch)
        t = self.temperature
        kl = _kl(logits, targets[1], t)
        return hidden_mse(hidden, targets[0], batch) + self.weight * t * t * kl


@dataclass(frozen=True)
class LabelsAndLogits:
    """Cross-entropy on the labels; with a teacher, (1 − ``alpha``) × that plus ``alpha`` ×
    T²·KL(teacher ‖ student) at temperature T (tensor classifiers, batches ``(x, y)``)."""

    alpha: float = 0.5
    temperature: float = 2.0

    def targets(self, teacher: Any, batch: Any) -> Any:
        """The teacher's logits on the batch's inputs, or None without a teacher."""
        import torch

        if teacher is None:
            return None
        with torch.no_grad():
            return teacher(batch[0])

    def as_dict(self) -> dict[str, Any]:
        return {"loss": "cross_entropy + logits_kl", "temperature": self.temperature,
                "kl_weight": self.alpha}  # fmt: skip

    def loss(self, student: Any, batch: Any, targets: Any) -> torch.Tensor:
        x, y = batch
        return distillation_loss(
            student(x), y, targets, alpha=self.alpha, temperature=self.temperature
        )
