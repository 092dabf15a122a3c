"""Layer scoring and dropping."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pruneguard.pruning.methods.attention import convert_attention
from pruneguard.pruning.methods.layers import (
    LayerCountError,
    LayerPruner,
    drop_layers,
    find_layers,
    gate_layers,
    plan_layers,
    score_layers,
)
from pruneguard.pruning.models.digits_transformer import DigitsTransformer, build_digits_transformer
from pruneguard.registry.errors import ConfigError


@pytest.fixture(scope="module")
def model() -> DigitsTransformer:
    return build_digits_transformer(layers=4, seed=5).eval()


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.rand(32, 1, 8, 8, generator=gen) * 16, torch.randint(0, 10, (32,), generator=gen))
        for _ in range(2)
    ]


def test_skipping_a_layer_by_gate_equals_dropping_it(model: DigitsTransformer) -> None:
    m = copy.deepcopy(model)
    x = torch.rand(6, 1, 8, 8) * 16
    _, layers = find_layers(m)
    with (
        torch.no_grad(),
        gate_layers(list(layers), [torch.tensor(g) for g in (1.0, 0.0, 1.0, 0.0)]),
    ):
        gated = m(x)
    assert drop_layers(m, [1, 3]) == [0, 2]
    assert m.encoder.num_layers == 2 and len(m.encoder.layers) == 2
    with torch.no_grad():
        torch.testing.assert_close(m(x), gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("criterion", ["ablation", "taylor", "activation", "magnitude"])
def test_dropped_layers_are_the_lowest_scored(
    model: DigitsTransformer, batches: list[tuple[torch.Tensor, torch.Tensor]], criterion: str
) -> None:
    m = copy.deepcopy(model)
    convert_attention(m)  # same model, prunable attention: the scores must not care
    scores = score_layers(m, criterion, batches, loss=lambda o, b: F.cross_entropy(o, b[1]))
    pruner = LayerPruner(
        m, criterion=criterion, target=2, calibration=batches, loss_fn=F.cross_entropy
    )
    pruner.step()
    dropped = sorted(set(range(4)) - set(pruner.report()["kept_layers"]))
    assert dropped == sorted(scores.argsort()[:2].tolist())
    assert max(scores[dropped]) <= min(scores[pruner.report()["kept_layers"]])
    assert len(find_layers(m)[1]) == 2


def test_representation_change_without_labels(model: DigitsTransformer) -> None:
    m = copy.deepcopy(model)
    x = [torch.rand(16, 1, 8, 8) * 16]
    scores = score_layers(m, "ablation", x)
    assert scores.shape == (4,) and bool((scores > 0).all())


def test_layer_count_at_or_above_the_models_is_refused(model: DigitsTransformer) -> None:
    with pytest.raises(LayerCountError, match=r"has 4 layers.*use target.layers <= 3"):
        LayerPruner(copy.deepcopy(model), criterion="magnitude", target=4)
    with pytest.raises(LayerCountError):
        plan_layers(torch.ones(4), 7)
    with pytest.raises(ConfigError, match="whole number"):
        LayerPruner(copy.deepcopy(model), criterion="magnitude", target=1.5)
    with pytest.raises(ConfigError, match="criterion='l0' for layers"):
        LayerPruner(copy.deepcopy(model), criterion="l0", target=1)
