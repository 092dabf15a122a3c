"""Head scoring, choosing and physical removal on the digits transformer and plain encoders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruneguard.pruning.export import export_onnx, parity
from pruneguard.pruning.methods.heads import (
    HeadPruner,
    HeadsExhausted,
    NoAttention,
    find_heads,
    plan_removal,
    removal_counts,
    score_heads,
)
from pruneguard.pruning.methods.layers import LayerPruner
from pruneguard.pruning.models import build_builtin
from pruneguard.pruning.models.digits_transformer import DigitsTransformer
from pruneguard.registry.errors import ConfigError

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture(scope="module")
def digits() -> tuple[Batches, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(data.target)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 1280, 64)]
    return batches, x[1280:1344]


@pytest.fixture(scope="module")
def trained(digits: tuple[Batches, torch.Tensor]) -> DigitsTransformer:
    batches, _ = digits
    model = build_builtin("digits-transformer", layers=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):  # a few steps: scores should reflect a model that has learnt something
        for x, y in batches[:12]:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.mark.parametrize("criterion", ["gradient", "taylor", "ablation", "magnitude"])
def test_removed_heads_are_the_lowest_scored(
    trained: DigitsTransformer, digits: tuple[Batches, torch.Tensor], criterion: str
) -> None:
    batches, _ = digits
    cal = batches[:2]
    model = copy.deepcopy(trained)
    pruner = HeadPruner(
        model, criterion=criterion, target=0.5, scope="global", calibration=cal,
        loss_fn=F.cross_entropy,
    )  # fmt: skip
    scores = torch.cat(
        score_heads(model, pruner.sites, criterion, cal, loss=lambda o, b: F.cross_entropy(o, b[1]))
    )
    pruner.step()
    kept = [
        4 * i + h for i, heads in enumerate(pruner.report()["kept_heads"].values()) for h in heads
    ]
    removed = sorted(set(range(12)) - set(kept))
    assert len(removed) == 6
    # every removed head scores no higher than every kept head that was not protected as its
    # layer's best
    best = {4 * i + int(scores[4 * i : 4 * i + 4].argmax()) for i in range(3)}
    assert max(scores[removed]) <= min(scores[sorted(set(kept) - best)], default=float("inf"))
    assert [s.num_heads for s in find_heads(model)] == [
        len(h) for h in pruner.report()["kept_heads"].values()
    ]


def test_layer_scope_removes_the_same_share_from_every_layer(trained: DigitsTransformer) -> None:
    model = copy.deepcopy(trained)
    pruner = HeadPruner(model, criterion="magnitude", target=0.5, scope="layer")
    pruner.step()
    assert [s.num_heads for s in pruner.sites] == [2, 2, 2]
    memory = pruner.report()
    assert (
        memory["attention_memory_after"]["kv_bytes_per_token"] * 2
        == (memory["attention_memory_before"]["kv_bytes_per_token"])
    )
    assert memory["attention_memory_before"]["kv_bytes_per_token"] == 2 * 3 * 4 * 8 * 4


def test_global_plan_never_empties_a_layer() -> None:
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 6.0, 7.0])]
    plan = plan_removal(scores, 4)
    assert plan == [[0, 1], [0, 1]]  # layer 0 keeps its best head although it scores lowest


def test_iterative_schedule_reaches_the_target(
    trained: DigitsTransformer, digits: tuple[Batches, torch.Tensor]
) -> None:
    model = copy.deepcopy(trained)
    pruner = HeadPruner(model, criterion="taylor", target=0.5, steps=3, calibration=digits[0][:1])
    pruner.step()
    assert pruner.report()["heads_after"] == 10
    pruner.finish()
    assert pruner.report()["heads_after"] == 6


def test_pruned_digits_transformer_exports_with_parity(
    trained: DigitsTransformer, digits: tuple[Batches, torch.Tensor], tmp_path: Path
) -> None:
    batches, held_out = digits
    model = copy.deepcopy(trained)
    HeadPruner(model, criterion="gradient", target=0.5, calibration=batches[:2],
               loss_fn=F.cross_entropy).step()  # fmt: skip
    LayerPruner(model, criterion="ablation", target=1, calibration=batches[:2],
                loss_fn=F.cross_entropy).step()  # fmt: skip
    assert len(model.encoder.layers) == 2
    with torch.no_grad():
        assert model(held_out).shape == (64, 10)
    export_onnx(model, held_out[:4], tmp_path / "m.onnx")
    assert parity(model, tmp_path / "m.onnx", held_out) <= 1e-4
    assert parity(model, tmp_path / "m.onnx", held_out[:1]) <= 1e-4  # dynamic batch


def test_plain_transformer_encoder_model_prunes_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(3)
    block = nn.TransformerEncoderLayer(24, 6, 48, batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(block, 3, enable_nested_tensor=False),
        nn.Flatten(),
        nn.Linear(24 * 5, 3),
    ).eval()
    x = torch.randn(8, 5, 24)
    HeadPruner(model, criterion="taylor", target=0.4, calibration=[x]).step()
    assert sum(s.num_heads for s in find_heads(model)) == 18 - 7
    LayerPruner(model, criterion="taylor", target=2, calibration=[x]).step()
    assert model[0].num_layers == 1
    with torch.no_grad():
        assert model(x).shape == (8, 3)
    export_onnx(model, x, tmp_path / "m.onnx")
    assert parity(model, tmp_path / "m.onnx", x) <= 1e-4


# --- bad input -------------------------------------------------------------------------------


def test_ratio_that_empties_a_layer_is_refused(trained: DigitsTransformer) -> None:
    with pytest.raises(HeadsExhausted, match=r"leaving none; use target.heads < 0.875"):
        HeadPruner(copy.deepcopy(trained), criterion="magnitude", target=0.9, scope="layer")
    with pytest.raises(HeadsExhausted, match=r"use target.heads <= 0.750"):
        HeadPruner(copy.deepcopy(trained), criterion="magnitude", target=0.8, scope="global")
    with pytest.raises(ConfigError, match="must be > 0 and < 1"):
        removal_counts([4, 4], 1.0, "global")


def test_model_without_attention_is_refused() -> None:
    cnn = build_builtin("digits-cnn")
    with pytest.raises(NoAttention, match=r"no attention heads to prune.*use method channel"):
        HeadPruner(cnn, criterion="magnitude", target=0.3)
    with pytest.raises(NoAttention, match="no stack of attention layers"):
        LayerPruner(cnn, criterion="magnitude", target=1)


def test_gradient_without_labels_is_refused(trained: DigitsTransformer) -> None:
    model = copy.deepcopy(trained)
    pruner = HeadPruner(
        model, criterion="gradient", target=0.3, calibration=[torch.zeros(2, 1, 8, 8)]
    )
    with pytest.raises(ConfigError, match=r"needs a loss on labels.*use criterion taylor"):
        pruner.step()
    with pytest.raises(ConfigError, match="criterion='l0' for heads"):
        HeadPruner(model, criterion="l0", target=0.3)
