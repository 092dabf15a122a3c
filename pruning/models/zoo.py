"""Small test networks, one per structure that channel pruning must keep consistent.

Every zoo model takes ``(N, 3, 16, 16)`` inputs (:data:`ZOO_INPUT_SHAPE`) and returns
``(N, 10)`` logits. Each one exercises one kind of channel coupling:

``residual``   an add joins two branches, so their output channels are pruned together
``concat``     ``torch.cat`` of two branches: the consumer's input channels map to two producers
``depthwise``  a ``groups == channels`` conv: its in and out channels are the same channels
``grouped``    a ``groups = 4`` conv: every group must lose the same number of channels
``mlp``        linear layers only (hidden features pruned, the head's outputs kept)
``densenet``   DenseNet-style blocks: each BN–ReLU–conv layer's output is concatenated onto its
               input, so one producer's channels feed every later layer of the block
``resnext``    ResNeXt-style residual blocks whose 3×3 convs run at ``groups=8``

All of them use BatchNorm (except ``mlp``) and end in a linear head. ``in_channels`` (default
3) lets the same nets train on other inputs, e.g. ``in_channels=1`` for the 1×8×8 digits
(``bench/peer_zoo.py``); spatial size is free (global pooling before the head).
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
    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.a = nn.Sequential(_cbr(width, width), _cbr(width, width))
        self.b = nn.Sequential(_cbr(width, width), _cbr(width, width))
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.a(x)
        x = x + self.b(x)
        return self.head(x)


class ConcatNet(nn.Module):
    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
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

    def __init__(self, width: int = 32, expand: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        hidden = width * expand
        self.stem = _cbr(in_channels, width)
        self.expand = _cbr(width, hidden, kernel=1)
        self.depthwise = _cbr(hidden, hidden, groups=hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, width, 1, bias=False), nn.BatchNorm2d(width))
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x)


class GroupedNet(nn.Module):
    def __init__(self, width: int = 32, groups: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.grouped = _cbr(width, width, groups=groups)
        self.mix = _cbr(width, width, kernel=1)
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.grouped(self.stem(x))))


class MLPNet(nn.Module):
    """Flatten → two hidden layers; ``spatial`` is the input's side (16 for the zoo, 8 for digits)."""

    def __init__(self, hidden: int = 64, in_channels: int = 3, spatial: int = 16) -> None:
        super().__init__()
        n_in = in_channels * spatial * spatial
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class _DenseLayer(nn.Module):
    """BN → ReLU → 3×3 conv to ``growth`` channels, concatenated onto the input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, growth, 3, padding=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(nn.Module):
    """stem → dense block (3 layers) → transition (BN–ReLU–1×1, avg-pool) → dense block → head."""

    def __init__(self, growth: int = 24, layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        width = 2 * growth
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False)]
        for block in range(2):
            for _ in range(layers):
                blocks.append(_DenseLayer(width, growth))
                width += growth
            if block == 0:
                out = width // 2
                blocks += [nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, out, 1, bias=False),
                           nn.AvgPool2d(2)]  # fmt: skip
                width = out
        blocks += [nn.BatchNorm2d(width), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _ResNeXtBlock(nn.Module):
    """1×1 reduce → 3×3 grouped conv → 1×1 expand, plus the identity."""

    def __init__(self, width: int, bottleneck: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _cbr(width, bottleneck, kernel=1),
            _cbr(bottleneck, bottleneck, groups=groups),
            nn.Conv2d(bottleneck, width, 1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class ResNeXtNet(nn.Module):
    def __init__(
        self, width: int = 64, bottleneck: int = 64, groups: int = 8, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.blocks = nn.Sequential(*(_ResNeXtBlock(width, bottleneck, groups) for _ in range(2)))
        self.head = _Head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


ZOO: dict[str, Callable[..., nn.Module]] = {
    "residual": ResidualNet,
    "concat": ConcatNet,
    "depthwise": DepthwiseNet,
    "grouped": GroupedNet,
    "mlp": MLPNet,
    "densenet": DenseNet,
    "resnext": ResNeXtNet,
}


def build_zoo(name: str, seed: int = 0, **options: int) -> nn.Module:
    """A zoo model by name, initialised deterministically from ``seed``; ``options`` go to its
    constructor (e.g. ``in_channels=1``)."""
    if name not in ZOO:
        raise KeyError(f"zoo model {name!r} is unknown; allowed: {', '.join(sorted(ZOO))}")
    torch.manual_seed(seed)
    return ZOO[name](**options)
