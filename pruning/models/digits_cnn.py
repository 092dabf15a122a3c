"""A small residual CNN for scikit-learn's 8×8 digits (1×8×8 in, 10 classes out).

Trains to ~98% validation accuracy in a few seconds on a CPU. Its residual adds tie the
channels of the blocks they join, which is what makes structured pruning non-trivial.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "ResidualBlock", "build_digits_cnn"]


def _conv_bn(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1×1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(c_in, c_out, stride=stride), nn.ReLU(inplace=True), _conv_bn(c_out, c_out)
        )
        self.shortcut: nn.Module = (
            _conv_bn(c_in, c_out, kernel=1, stride=stride)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class DigitsCNN(nn.Module):
    """stem → 2 residual blocks at 8×8 → 2 residual blocks at 4×4 → global pool → linear."""

    def __init__(self, width: int = 16, n_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(in_channels, width), nn.ReLU(inplace=True))
        self.stage1 = nn.Sequential(ResidualBlock(width, width), ResidualBlock(width, width))
        self.stage2 = nn.Sequential(
            ResidualBlock(width, 2 * width, stride=2), ResidualBlock(2 * width, 2 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_digits_cnn(width: int = 16, n_classes: int = 10, seed: int | None = 0) -> DigitsCNN:
    """A freshly initialised :class:`DigitsCNN` (deterministic when ``seed`` is set)."""
    if seed is not None:
        torch.manual_seed(seed)
    return DigitsCNN(width=width, n_classes=n_classes)
