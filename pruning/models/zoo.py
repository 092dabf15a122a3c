"""Small test networks, one per structure that channel pruning must keep consistent.

Every zoo model takes ``(N, 3, 16, 16)`` inputs (:data:`ZOO_INPUT_SHAPE`) and returns
``(N, 10)`` logits. Each one exercises one kind of channel coupling:

``residual``   an add joins two branches, so their output channels are pruned together
``concat``     ``torch.cat`` of two branches: the consumer's input channels map to two producers
``depthwise``  a ``groups == channels`` conv: its in and out channels are the same channels
``grouped``    a ``groups = 4`` conv: every group must lose the same number of channels
``mlp``        linear layers only (hidden features pruned, the head's outputs kept)

All of them use BatchNorm (except ``mlp``) and end in a linear head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ZOO", "ZOO_INPUT_SHAPE", "build_zoo"]

ZOO_INPUT_SHAPE = (3, 16, 16)


def _cbr(
    c_in: int, c_out: int, kernel: int = 3, *, groups: int = 1, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class _Head(nn.Module):
    def __init__(self, c_in: int, n_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class ResidualNet(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = _cbr(3, width)
        self.a = nn.Sequential(_cbr(width, width), _cbr(width, width))
        self.b = nn.Sequential(_cbr(width, width), _cbr(width, width))
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.a(x)
        x = x + self.b(x)
        return self.head(x)


class ConcatNet(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = _cbr(3, width)
        self.left = _cbr(width, width)
        self.right = _cbr(width, width // 2, kernel=1)
        self.fuse = _cbr(width + width // 2, width)
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(self.fuse(x))


class DepthwiseNet(nn.Module):
    """MobileNet-style: 1×1 expand, 3×3 depthwise, 1×1 project, with a residual add."""

    def __init__(self, width: int = 32, expand: int = 2) -> None:
        super().__init__()
        hidden = width * expand
        self.stem = _cbr(3, width)
        self.expand = _cbr(width, hidden, kernel=1)
        self.depthwise = _cbr(hidden, hidden, groups=hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, width, 1, bias=False), nn.BatchNorm2d(width))
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x)


class GroupedNet(nn.Module):
    def __init__(self, width: int = 32, groups: int = 4) -> None:
        super().__init__()
        self.stem = _cbr(3, width)
        self.grouped = _cbr(width, width, groups=groups)
        self.mix = _cbr(width, width, kernel=1)
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.grouped(self.stem(x))))


class MLPNet(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        n_in = ZOO_INPUT_SHAPE[0] * ZOO_INPUT_SHAPE[1] * ZOO_INPUT_SHAPE[2]
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


ZOO: dict[str, Callable[[], nn.Module]] = {
    "residual": ResidualNet,
    "concat": ConcatNet,
    "depthwise": DepthwiseNet,
    "grouped": GroupedNet,
    "mlp": MLPNet,
}


def build_zoo(name: str, seed: int = 0) -> nn.Module:
    """A zoo model by name, initialised deterministically from ``seed``."""
    if name not in ZOO:
        raise KeyError(f"zoo model {name!r} is unknown; allowed: {', '.join(sorted(ZOO))}")
    torch.manual_seed(seed)
    return ZOO[name]()
