"""Training, recovery finetuning (optionally distilled from the dense teacher) and evaluation
of tensor classifiers; the loss is the task's (:class:`pruning.tasks.losses.LabelsAndLogits`
unless told).

Progress lines go to stderr, never stdout (``--json`` output owns stdout).
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING

import numpy as np

from pruneguard.pruning.progress import steps

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pruneguard.pruning.tasks.losses import DistillLoss

__all__ = ["accuracy", "predict", "train"]

Batches = Iterable[tuple["torch.Tensor", "torch.Tensor"]]


def train(
    model: nn.Module,
    loader: Batches,
    *,
    epochs: int,
    lr: float,
    teacher: nn.Module | None = None,
    loss: DistillLoss | None = None,
    progress: bool = True,
    seed: int | None = 0,
    desc: str = "epoch",
) -> None:
    """Train ``model`` in place with Adam on ``loss`` (default: cross-entropy on the labels,
    mixed with KL to the ``teacher``'s logits when given).

    Progress (``desc``, one step per epoch with its loss) goes to stderr: a bar on a terminal.

    ``seed`` fixes torch's global RNG first (so a shuffling DataLoader repeats its order).
    The model is left in eval mode.
    """
    import torch

    from pruneguard.pruning.tasks.losses import LabelsAndLogits

    loss = loss or LabelsAndLogits()
    if seed is not None:
        torch.manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    # Cosine decay to zero over every batch of the run: at a constant rate the last steps can
    # knock a converged model off its minimum (seen: 0.99 → 0.89 on one seed), and where that
    # happens depends on which floating-point kernels the CPU runs. Per batch, not per epoch:
    # a one-epoch recovery round would otherwise run at the full rate to its end (seen on a
    # DenseNet-style net: one such epoch on the *dense* model took 1.00 → 0.97).
    # (A loader without a length steps once per epoch instead.)
    sized = isinstance(loader, Sized)
    per_epoch = len(loader) if isinstance(loader, Sized) else 1
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(epochs * per_epoch, 1)
    )
    per_batch = schedule if sized else None
    with steps(epochs, desc, enabled=progress) as done:
        for _ in range(epochs):
            mean = _epoch(model, loader, optimizer, teacher, loss, per_batch)
            if not sized:
                schedule.step()
            done.advance(f"loss {mean:.4f}")
    model.eval()


def _epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    teacher: nn.Module | None,
    loss: DistillLoss,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
) -> float:
    """One pass over ``loader`` (``schedule`` steps after every batch); the mean loss."""
    model.train()
    total, n = 0.0, 0
    for batch in loader:
        value = loss.loss(model, batch, loss.targets(teacher, batch))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += value.detach().item() * len(batch[1])
        n += len(batch[1])
    return total / max(n, 1)


def predict(model: nn.Module, loader: Batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels and predicted classes over ``loader`` (eval mode, no gradients)."""
    import torch

    model.eval()
    xs, ys, preds = [], [], []
    with torch.no_grad():
        for x, y in loader:
            xs.append(x.numpy())
            ys.append(y.numpy())
            preds.append(model(x).argmax(dim=1).numpy())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(preds)


def accuracy(model: nn.Module, loader: Batches) -> float:
    """Fraction of ``loader``'s samples whose predicted class equals the label."""
    _, labels, predicted = predict(model, loader)
    return float((labels == predicted).mean()) if len(labels) else 0.0
