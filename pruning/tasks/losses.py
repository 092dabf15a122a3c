"""What a text model's recovery distils from its dense teacher, per task (the adapter's
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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

__all__ = ["DistillLoss", "HiddenStates", "HiddenStatesAndLogits", "hidden_mse"]

Batch = Mapping[str, "torch.Tensor"]


class DistillLoss(Protocol):
    def targets(self, teacher: Any, batch: Batch) -> Any: ...

    def loss(self, student: Any, batch: Batch, targets: Any) -> torch.Tensor: ...

    def as_dict(self) -> dict[str, Any]:
        """What the manifest records of the loss (``pruning.distillation``)."""
        ...


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
        import torch.nn.functional as F

        hidden, logits = student.hidden_and_logits(**batch)
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=-1),
            F.log_softmax(targets[1] / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        return hidden_mse(hidden, targets[0], batch) + self.weight * t * t * kl
