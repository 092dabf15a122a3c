"""The cases whose numbers torch's kernels move (docs/testing.md), shared by the tests that
bound them and by ``bench/kernel_spread.py``, so that the bench measures what the tests bound:
trained digits CNNs, the light cut, and MiniLM heads removed vs gated."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruneguard.pruning.finetune import train
from pruneguard.pruning.methods.channels import ChannelPruner
from pruneguard.pruning.models import build_builtin

Rows = tuple[torch.Tensor, torch.Tensor]


def finetune_split() -> dict[str, DataLoader]:
    """scikit-learn's digits in [0, 1]: 1,400 training rows, 397 held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:1400], perm[1400:]
    return {
        "train": DataLoader(TensorDataset(x[tr], y[tr]), batch_size=64, shuffle=True),
        "val": DataLoader(TensorDataset(x[va], y[va]), batch_size=256),
    }


def trained_cnn(loader: Any, seed: int, *, epochs: int = 6) -> nn.Module:
    """The digits CNN, initialised and shuffled by ``seed``, trained at lr 3e-3."""
    model = build_builtin("digits-cnn", seed=seed)
    train(model, loader, epochs=epochs, lr=3e-3, progress=False, seed=seed)
    return model


def recipe_split() -> tuple[Any, list[Rows], Rows]:
    """The built-in recipe's digits: training loader, 4 calibration batches, held-out rows."""
    from pruneguard.pruning.data import load_data
    from pruneguard.pruning.recipe import load_recipe

    data = load_data(load_recipe("digits-cnn").data, seed=0)
    ordered = DataLoader(data["train"].dataset, batch_size=64)
    calibration = [batch for _, batch in zip(range(4), ordered, strict=False)]
    val = tuple(torch.cat(t) for t in zip(*data["val"], strict=True))
    return data["train"], calibration, (val[0], val[1])


def held_out_accuracy(model: nn.Module, val: Rows) -> float:
    with torch.no_grad():
        return float((model.eval()(val[0]).argmax(1) == val[1]).float().mean())


def light_cut(
    dense: nn.Module, calibration: list[Rows], val: Rows, criterion: str, seed: int
) -> dict[str, float]:
    """10% of the channels cut without finetuning, BatchNorm re-estimated or left stale."""
    found = {"dense": held_out_accuracy(dense, val)}
    for recalibrate, key in ((True, "recalibrated"), (False, "stale")):
        model = copy.deepcopy(dense)
        torch.manual_seed(seed)
        ChannelPruner(
            model, val[0][:1], criterion=criterion, ratio=0.1, calibration=calibration,
            recalibrate_bn=recalibrate,
        ).step()  # fmt: skip
        found[key] = held_out_accuracy(model, val)
    return found


HEAD_PLAN: list[list[int]] = [[0, 5], [], [], [2, 7, 11], [], [1]]  # heads to drop per layer


def heads_removed_and_gated(model: nn.Module, feeds: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """``model``'s outputs with HEAD_PLAN's heads removed physically, and with them gated to 0.

    ``model`` is left with the heads removed."""
    from pruneguard.pruning.methods.heads import find_heads, gate_heads, remove_heads

    sites = find_heads(model)
    gates = [torch.ones(site.num_heads) for site in sites]
    for gate, drop in zip(gates, HEAD_PLAN, strict=True):
        gate[drop] = 0.0
    with torch.no_grad(), gate_heads(sites, gates):
        gated = model(**feeds)
    remove_heads(sites, HEAD_PLAN)
    with torch.no_grad():
        return model(**feeds), gated
