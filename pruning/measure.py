"""Model size and compute: parameter count and multiply-accumulates (MACs)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (zeros included: see ``unstructured.sparsity_report``)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """MACs of one forward pass on ``example_inputs`` (torch_pruning's op counter, on a copy).

    Scales with the batch of ``example_inputs``: pass one sample for per-sample MACs.
    """
    import torch_pruning as tp

    with contextlib.redirect_stdout(sys.stderr):
        macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs)
