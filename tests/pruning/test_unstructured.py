"""Unstructured and N:M masks: purity, patterns, scope, persistence through training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneguard.pruning.finetune import train
from pruneguard.pruning.methods.masks import (
    MaskPruner,
    apply_masks,
    compute_masks,
    nm_mask,
    remove_masks,
    sparsity_report,
)
from pruneguard.pruning.models import build_builtin
from pruneguard.registry.errors import ConfigError, Conflict


def _mlp(strong_middle: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    if strong_middle:  # every middle weight (|w| >= 1) outweighs every other (|w| <= 0.25)
        with torch.no_grad():
            w = model[2].weight
            w.copy_(torch.sign(w) * (1 + w.abs()))
    return model


def _random_batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
        for _ in range(n)
    ]


def test_compute_masks_is_pure() -> None:
    model = build_builtin("digits-cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = compute_masks(model, sparsity=0.5)
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("shape", [(8, 16), (12, 8, 3, 3)])
def test_two_four_masks_zero_exactly_two_of_every_four_inputs(shape: tuple[int, ...]) -> None:
    weight = torch.randn(shape)
    keep = nm_mask(weight, 2, 4)
    assert keep is not None and keep.shape == weight.shape
    along_inputs = keep.movedim(1, -1).reshape(-1, 4)  # groups of 4 consecutive input channels
    assert bool(((~along_inputs).sum(1) == 2).all())
    kept = (weight.abs() * keep).movedim(1, -1).reshape(-1, 4)
    dropped = (weight.abs() * ~keep).movedim(1, -1).reshape(-1, 4)
    # the two kept are the two largest of each group
    assert bool((kept.max(1).values >= dropped.max(1).values).all())
    assert bool(
        (
            torch.where(keep.movedim(1, -1).reshape(-1, 4), kept, torch.inf).min(1).values
            >= dropped.max(1).values
        ).all()
    )


def test_nm_on_a_model_skips_layers_whose_inputs_do_not_group() -> None:
    model = build_builtin("digits-cnn")
    masks = compute_masks(model, sparsity=0.0, nm=(2, 4))
    assert "stem.0.0" not in masks  # 1 input channel: cannot be 2:4
    assert "fc" in masks
    apply_masks(model, masks)
    for name in masks:
        w = model.get_submodule(name).weight.detach()
        groups = (w.movedim(1, -1).reshape(-1, 4) == 0).sum(1)
        assert bool((groups >= 2).all()), name


def test_layer_scope_prunes_every_layer_equally_global_follows_magnitude() -> None:
    model = _mlp(strong_middle=True)
    layer = compute_masks(model, sparsity=0.4, scope="layer")
    glob = compute_masks(model, sparsity=0.4, scope="global")
    layer_sparsity = {n: 1 - m.float().mean().item() for n, m in layer.items()}
    glob_sparsity = {n: 1 - m.float().mean().item() for n, m in glob.items()}
    assert all(abs(s - 0.4) < 0.01 for s in layer_sparsity.values())
    total = sum(m.numel() for m in glob.values())
    zeros = sum(int((~m).sum()) for m in glob.values())
    assert zeros == round(0.4 * total)
    assert glob_sparsity["2"] == 0.0  # the strong layer keeps all its weights,
    assert glob_sparsity["4"] > glob_sparsity["0"] > 0.6  # the weakest (|w| <= 0.18) loses most


def test_masked_weights_stay_zero_through_training_and_after_removal() -> None:
    model = build_builtin("digits-cnn")
    masks = compute_masks(model, sparsity=0.8)
    apply_masks(model, masks)
    kept_before = model.fc.weight_orig.detach().clone()
    train(model, _random_batches(), epochs=1, lr=1e-2, progress=False)
    assert not torch.equal(model.fc.weight_orig.detach(), kept_before)  # it did train
    with torch.no_grad():
        model(torch.randn(1, 1, 8, 8))  # recompute weight from weight_orig * mask
    for name, mask in masks.items():
        assert bool((model.get_submodule(name).weight[~mask] == 0).all()), name
    report = sparsity_report(model)
    assert report["weight_sparsity"] >= 0.8 - 1e-3
    remove_masks(model)
    assert not any(hasattr(m, "weight_orig") for m in model.modules())
    assert sparsity_report(model) == report


def test_sparsity_report_counts_real_zeros() -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].weight[:3] = 0  # 3 rows × 16
        model[0].bias[:2] = 0
    report = sparsity_report(model)
    params = sum(p.numel() for p in model.parameters())
    assert report["params"] == params
    assert report["zero_params"] == 3 * 16 + 2
    assert report["sparsity"] == pytest.approx((3 * 16 + 2) / params)
    assert report["layers"]["0"] == pytest.approx(3 / 32)


def test_mask_pruner_ramps_sparsity_over_steps() -> None:
    model = _mlp()
    pruner = MaskPruner(model, sparsity=0.8, steps=4, scope="global")
    seen = []
    for _ in range(3):
        pruner.step()
        seen.append(sparsity_report(model)["weight_sparsity"])
    pruner.finish()
    seen.append(sparsity_report(model)["weight_sparsity"])
    assert seen == pytest.approx([0.2, 0.4, 0.6, 0.8], abs=2e-3)
    with pytest.raises(Conflict):
        pruner.step()


def test_mask_pruner_nm_gives_half_sparsity_in_eligible_layers() -> None:
    model = _mlp()
    pruner = MaskPruner(model, sparsity=0.5, nm=(2, 4))
    pruner.step()
    pruner.finish()
    assert sparsity_report(model)["weight_sparsity"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 1.0}, "0 <= sparsity < 1"),
        ({"sparsity": 0.5, "scope": "block"}, "global, layer"),
        ({"sparsity": 0.5, "nm": (4, 2)}, "0 < N < M"),
    ],
)
def test_bad_mask_settings_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compute_masks(_mlp(), **kwargs)
