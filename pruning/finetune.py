"""Training, recovery finetuning (optionally distilled from the dense teacher) and evaluation.

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

__all__ = ["accuracy", "distillation_loss", "predict", "train"]

Batches = Iterable[tuple["torch.Tensor", "torch.Tensor"]]


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
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1.0 - alpha) * ce + alpha * kl * t * t


def train(
    model: nn.Module,
    loader: Batches,
    *,
    epochs: int,
    lr: float,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.5,
    temperature: float = 2.0,
    progress: bool = True,
    seed: int | None = 0,
    desc: str = "epoch",
) -> None:
    """Train ``model`` in place with Adam; with a ``teacher``, distill from its logits.

    Progress (``desc``, one step per epoch with its loss) goes to stderr: a bar on a terminal.

    ``seed`` fixes torch's global RNG first (so a shuffling DataLoader repeats its order).
    The model is left in eval mode.
    """
    import torch

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
            loss = _epoch(model, loader, optimizer, teacher, distill_alpha, temperature, per_batch)
            if not sized:
                schedule.step()
            done.advance(f"loss {loss:.4f}")
    model.eval()


def _epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    teacher: nn.Module | None,
    alpha: float,
    temperature: float,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
) -> float:
    """One pass over ``loader`` (``schedule`` steps after every batch); the mean loss."""
    import torch

    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        with torch.no_grad():
            t_logits = teacher(x) if teacher is not None else None
        loss = distillation_loss(model(x), y, t_logits, alpha=alpha, temperature=temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.detach().item() * len(y)
        n += len(y)
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
