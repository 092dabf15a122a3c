"""Channel pruning through torch_pruning: shapes, sizes, ONNX parity, criteria, targets."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from kernel_cases import light_cut, recipe_split, trained_cnn
from torch import nn

from pruneguard.pruning.errors import TargetUnreachable
from pruneguard.pruning.export import export_onnx, parity
from pruneguard.pruning.measure import count_macs, count_params
from pruneguard.pruning.methods.channels import (
    ChannelPruner,
    allocate_globally,
    find_classifier,
    ratio_for_mac_reduction,
    recalibrate_batchnorm,
)
from pruneguard.pruning.methods.importance import CRITERIA
from pruneguard.pruning.models import build_builtin
from pruneguard.pruning.models.zoo import ZOO, ZOO_INPUT_SHAPE, build_zoo
from pruneguard.registry.errors import ConfigError, Conflict

DIGITS_SHAPE = (1, 8, 8)


def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "digits-cnn":
        return build_builtin("digits-cnn").eval(), torch.randn(1, *DIGITS_SHAPE)
    return build_zoo(name).eval(), torch.randn(1, *ZOO_INPUT_SHAPE)


def _calibration(x: torch.Tensor, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    shape = (8, *x.shape[1:])
    return [
        (torch.randn(shape, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)
    ]


def _widths(model: nn.Module) -> list[int]:
    return [
        m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


@pytest.mark.parametrize("name", ["digits-cnn", *sorted(ZOO)])
def test_pruning_removes_channels_and_exports_matching_onnx(name: str, tmp_path: Path) -> None:
    model, x = _model_and_input(name)
    params, macs = count_params(model), count_macs(model, x)
    ChannelPruner(model, x, criterion="l1", ratio=0.5).step()
    batch = torch.randn(5, *x.shape[1:])
    assert model(batch).shape == (5, 10)  # the classifier's outputs are never pruned
    assert count_params(model) < 0.6 * params
    assert count_macs(model, x) < 0.6 * macs
    export_onnx(model, x, tmp_path / "m.onnx")
    assert parity(model, tmp_path / "m.onnx", batch) < 1e-4


def test_find_classifier_is_the_last_layer_run() -> None:
    model, x = _model_and_input("concat")
    assert find_classifier(model, x) is model.head.fc


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", ["digits-cnn", "grouped"])
def test_every_criterion_prunes(criterion: str, name: str) -> None:
    model, x = _model_and_input(name)
    params = count_params(model)
    ChannelPruner(model, x, criterion=criterion, ratio=0.25, calibration=_calibration(x)).step()
    assert count_params(model) < params
    assert model(torch.randn(2, *x.shape[1:])).shape == (2, 10)
    assert all(p.grad is None for p in model.parameters())  # no stale gradients left behind


def _kill_channels(model: nn.Module, dead: list[int]) -> None:
    """Zero every weight of ``dead`` channels of GroupedNet.mix: they carry nothing."""
    conv, bn = model.mix[0], model.mix[1]
    with torch.no_grad():
        conv.weight[dead] = 0
        bn.weight[dead] = 0
        bn.bias[dead] = 0
        model.head.fc.weight[:, dead] = 0


@pytest.mark.parametrize("criterion", ["l1", "l2", "gradient", "taylor", "activation"])
def test_criteria_remove_the_channels_that_carry_nothing(criterion: str) -> None:
    model, x = _model_and_input("grouped")
    dead = [1, 4, 9, 15, 20, 22, 27, 30]
    _kill_channels(model, dead)
    others = [
        m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not model.mix[0]
    ]
    batch = torch.randn(6, *x.shape[1:])
    before = model(batch)
    pruner = ChannelPruner(
        model,
        x,
        criterion=criterion,
        ratio=len(dead) / 32,
        calibration=_calibration(x),
        ignored_layers=others,
        recalibrate_bn=False,  # the logits compared below must see the same BN statistics
    )
    pruner.step()
    assert model.mix[0].out_channels == 32 - len(dead)
    # Had a live channel gone instead of a dead one, the logits would move.
    torch.testing.assert_close(model(batch), before, rtol=0, atol=1e-6)
    assert bool((model.mix[0].weight.flatten(1).abs().sum(1) > 0).all())


def test_random_criterion_is_not_the_dead_channels() -> None:
    model, x = _model_and_input("grouped")
    _kill_channels(model, list(range(8)))
    others = [
        m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not model.mix[0]
    ]
    torch.manual_seed(5)
    ChannelPruner(model, x, criterion="random", ratio=0.25, ignored_layers=others).step()
    zero_rows = int((model.mix[0].weight.flatten(1).abs().sum(1) == 0).sum())
    assert zero_rows > 0  # the control keeps some dead channels that l1 would have removed


@pytest.mark.parametrize("round_to", [8, 16])
def test_round_to_keeps_channel_counts_multiples(round_to: int) -> None:
    model, x = build_builtin("digits-cnn", width=40).eval(), torch.randn(1, *DIGITS_SHAPE)
    ChannelPruner(model, x, criterion="l1", ratio=0.3, round_to=round_to).step()
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c % round_to == 0 for c in convs), convs  # from widths 40 and 80
    assert max(convs) < 80


def test_round_to_never_empties_a_layer() -> None:
    model, x = _model_and_input("digits-cnn")  # widths 16 and 32
    ChannelPruner(model, x, criterion="l1", ratio=0.9, round_to=16).step()
    assert {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)} == {16}
    assert model(torch.randn(2, *DIGITS_SHAPE)).shape == (2, 10)


def test_round_to_with_grouped_convs_is_refused() -> None:
    model, x = _model_and_input("grouped")
    with pytest.raises(ConfigError, match=r"grouped conv 'grouped\.0'"):
        ChannelPruner(model, x, criterion="l1", ratio=0.5, round_to=8)


def test_iterative_steps_shrink_gradually_to_the_one_shot_width() -> None:
    model, x = _model_and_input("digits-cnn")
    one_shot = copy.deepcopy(model)
    ChannelPruner(one_shot, x, criterion="l1", ratio=0.5).step()
    pruner = ChannelPruner(model, x, criterion="l1", ratio=0.5, steps=3)
    seen = [sum(_widths(model))]
    for _ in range(3):
        pruner.step()
        seen.append(sum(_widths(model)))
    pruner.finish()
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 4
    assert _widths(model) == _widths(one_shot)
    with pytest.raises(Conflict, match="3 steps"):
        pruner.step()


def _kept_fractions(model: nn.Module, dense: nn.Module) -> set[float]:
    pairs = zip(model.modules(), dense.modules(), strict=True)
    return {round(m.out_channels / d.out_channels, 3) for m, d in pairs if isinstance(m, nn.Conv2d)}


def test_global_pruning_gives_uneven_widths_uniform_does_not() -> None:
    dense, x = _model_and_input("digits-cnn")
    uniform, ranked = copy.deepcopy(dense), copy.deepcopy(dense)
    ChannelPruner(uniform, x, criterion="l1", ratio=0.5).step()
    ChannelPruner(ranked, x, criterion="l1", ratio=0.5, global_pruning=True).step()
    assert _kept_fractions(uniform, dense) == {0.5}
    assert len(_kept_fractions(ranked, dense)) > 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"criterion": "l3", "ratio": 0.5}, "l1, l2, gradient"),
        ({"criterion": "l1", "ratio": 1.2}, "0 <= ratio"),
        ({"criterion": "taylor", "ratio": 0.5}, "calibration"),
        ({"criterion": "l1", "ratio": 0.5, "steps": 0}, "steps"),
        ({"criterion": "l1", "ratio": 0.5, "round_to": 0}, "round_to"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict, match: str) -> None:
    model, x = _model_and_input("mlp")
    with pytest.raises(ConfigError, match=match):
        ChannelPruner(model, x, **kwargs)


def _pruned_reduction(model: nn.Module, x: torch.Tensor, ratio: float, **kw: object) -> float:
    copy_ = copy.deepcopy(model)
    ChannelPruner(copy_, x, criterion="l1", ratio=ratio, **kw).step()  # type: ignore[arg-type]
    return 1 - count_macs(copy_, x) / count_macs(model, x)


@pytest.mark.parametrize(
    ("name", "target", "round_to"), [("digits-cnn", 0.6, None), ("residual", 0.5, 8)]
)
def test_ratio_for_mac_reduction_reaches_the_target(
    name: str, target: float, round_to: int | None
) -> None:
    model, x = _model_and_input(name)
    params = count_params(model)
    ratio = ratio_for_mac_reduction(model, x, target, round_to=round_to)
    assert count_params(model) == params  # searched on copies
    reached = _pruned_reduction(model, x, ratio, round_to=round_to)
    assert reached >= target
    # the smallest such ratio: a step below it misses the target
    assert _pruned_reduction(model, x, ratio - 0.01, round_to=round_to) < target
    if round_to is None:  # without rounding the MACs move smoothly with the ratio
        assert reached < target + 0.03


def test_unreachable_mac_target_names_target_and_best() -> None:
    model, x = _model_and_input("digits-cnn")
    with pytest.raises(TargetUnreachable, match=r"0\.9999.*removes at most 0\.9\d\d") as err:
        ratio_for_mac_reduction(model, x, 0.9999)
    assert isinstance(err.value, ConfigError)


def test_grouped_convs_reach_every_cut_the_library_reaches() -> None:
    # ResNeXt-style blocks at groups=8: torch_pruning leaves the grouped convs' channels whole
    # once the ratio would empty a group, so the largest ratio is not the deepest cut.
    model, x = _model_and_input("resnext")
    dense = count_macs(model, x)
    pruned = copy.deepcopy(model)
    ChannelPruner(pruned, x, criterion="l1", ratio=0.95).step()
    assert 1 - count_macs(pruned, x) / dense < 0.85  # what the old single probe at 0.95 saw
    ratio = ratio_for_mac_reduction(model, x, 0.85)
    ChannelPruner(model, x, criterion="l1", ratio=ratio).step()
    assert 1 - count_macs(model, x) / dense >= 0.85
    assert model(torch.randn(3, *x.shape[1:])).shape == (3, 10)


class _StemlessDenseNet(nn.Module):
    """A dense block straight on the input: the first torch.cat includes the model's input."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 8, 3, padding=1))
            for c in (3, 11, 19)
        )
        self.fc = nn.Linear(27, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return self.fc(x.mean((2, 3)))


def test_a_concat_of_the_model_input_is_refused_with_the_fix() -> None:
    model, x = _StemlessDenseNet().eval(), torch.randn(1, *ZOO_INPUT_SHAPE)
    with pytest.raises(ConfigError, match=r"torch\.cat fed by layer 'layers\.0\.2'.*Fix: start"):
        ChannelPruner(model, x, criterion="l1", ratio=0.5)
    densenet, x = _model_and_input("densenet")  # the same blocks after a stem conv prune
    ChannelPruner(densenet, x, criterion="l1", ratio=0.5).step()
    assert densenet(torch.randn(2, *x.shape[1:])).shape == (2, 10)


def test_mac_reduction_out_of_range_is_a_config_error() -> None:
    model, x = _model_and_input("mlp")
    with pytest.raises(ConfigError, match="0 < macs_reduction < 1"):
        ratio_for_mac_reduction(model, x, 70.0)


def test_pruner_setup_leaves_batchnorm_statistics_alone() -> None:
    model, x = _model_and_input("digits-cnn")
    model.train()
    stats = copy.deepcopy(model.stem[0][1].running_mean)
    ChannelPruner(model, x * 100, criterion="l1", ratio=0.5)
    assert torch.equal(model.stem[0][1].running_mean, stats)
    assert model.training


def test_recalibrate_batchnorm_uses_the_batches_and_restores_modes() -> None:
    model, _ = _model_and_input("digits-cnn")
    batches = [torch.randn(16, *DIGITS_SHAPE) * 5 + 3 for _ in range(3)]
    bn = model.get_submodule("stem.0.1")
    assert isinstance(bn, nn.BatchNorm2d)
    assert recalibrate_batchnorm(model, iter(batches)) == 3
    with torch.no_grad():
        expected = model.get_submodule("stem.0.0")(torch.cat(batches)).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.1  # restored after the cumulative average
    assert not any(m.training for m in model.modules())


def test_recalibrate_batchnorm_without_batches_changes_nothing() -> None:
    model, _ = _model_and_input("digits-cnn")
    model.train()
    before = copy.deepcopy(model.state_dict())
    assert recalibrate_batchnorm(model, []) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def trained_digits() -> tuple[list[nn.Module], list[tuple[torch.Tensor, torch.Tensor]], tuple]:
    """The digits CNN trained on 5 seeds (init and order), with calibration and held-out rows."""
    loader, calibration, val = recipe_split()
    return [trained_cnn(loader, seed) for seed in SEEDS], calibration, val


@pytest.mark.parametrize("criterion", ["l2", "taylor", "random"])
def test_light_cut_keeps_a_trained_cnn_accurate_without_finetuning(
    criterion: str, trained_digits: tuple
) -> None:
    # Regression: BatchNorm statistics left stale after removing 10% of the channels took
    # the digits CNN from ~0.99 to ~0.5; re-estimated on the calibration batches it stays close.
    # Which channels a 10% cut of a 16-channel layer takes varies with the seed and with the
    # CPU's kernels, so the claims are over 5 seeds, paired per seed. Measured by
    # bench/kernel_spread.py under 3 kernel sets × 1 and 2 threads (docs/testing.md): the gain
    # of re-estimating is 0.19–0.66 per seed (5-seed mean ≥ 0.41), the drop from dense
    # 0.006–0.103 per seed (5-seed mean ≤ 0.048).
    dense_models, calibration, val = trained_digits
    cuts = [
        light_cut(dense, calibration, val, criterion, seed)
        for seed, dense in zip(SEEDS, dense_models, strict=True)
    ]
    drops = [cut["dense"] - cut["recalibrated"] for cut in cuts]
    gains = [cut["recalibrated"] - cut["stale"] for cut in cuts]
    assert min(gains) > 0, gains  # re-estimated statistics beat stale ones on every seed
    assert sum(gains) / len(gains) >= 0.15, gains  # and by far: stale ones cost most of the cut
    assert sum(drops) / len(drops) <= 0.08, drops  # close to dense without any finetuning


def _conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("name", ["depthwise", "resnext", "concat"])
def test_global_widths_are_reached_in_steps_and_from_a_partial_cut(name: str) -> None:
    model, x = _model_and_input(name)
    cal = _calibration(x)
    ranked = copy.deepcopy(model)
    ChannelPruner(ranked, x, criterion="taylor", ratio=0.5, calibration=cal,
                  global_pruning=True).step()  # fmt: skip
    widths = allocate_globally(model, x, 0.5, criterion="taylor", calibration=cal)
    assert {n: w for n, w in _conv_widths(ranked).items() if n in widths} == widths
    assert len({w / _conv_widths(model)[n] for n, w in widths.items()}) > 1  # uneven
    stepped = copy.deepcopy(model)
    pruner = ChannelPruner(stepped, x, criterion="l2", ratio=0.5, steps=3, widths=widths)
    for _ in range(3):
        pruner.step()
    assert _conv_widths(stepped) == _conv_widths(ranked)
    # a retry starts from whatever widths an earlier step left and still ends at the targets
    partial = copy.deepcopy(model)
    ChannelPruner(partial, x, criterion="l1", ratio=0.2).step()
    ChannelPruner(partial, x, criterion="l1", ratio=0.5, steps=2, widths=widths).step()
    retry = ChannelPruner(partial, x, criterion="l1", ratio=0.5, steps=2, widths=widths)
    retry.step()
    retry.step()
    assert {n: w for n, w in _conv_widths(partial).items() if n in widths} == widths
    assert partial(torch.randn(2, *x.shape[1:])).shape == (2, 10)


def test_global_mac_target_is_searched_on_the_ranking() -> None:
    model, x = _model_and_input("depthwise")
    cal = _calibration(x)
    ranked = {"criterion": "taylor", "calibration": cal}
    ratio = ratio_for_mac_reduction(model, x, 0.6, ranked=ranked)
    pruned = copy.deepcopy(model)
    widths = allocate_globally(model, x, ratio, **ranked)
    ChannelPruner(pruned, x, criterion="taylor", ratio=ratio, steps=2, widths=widths,
                  calibration=cal).step()  # fmt: skip
    assert 1 - count_macs(pruned, x) / count_macs(model, x) < 0.6  # half way there
    uniform = ratio_for_mac_reduction(model, x, 0.6)
    assert ratio != pytest.approx(uniform, abs=0.01)  # the ranking moved the ratio


def test_target_widths_for_another_model_are_refused() -> None:
    model, x = _model_and_input("mlp")
    with pytest.raises(ConfigError, match=r"layers this model does not have: stem\.0"):
        ChannelPruner(model, x, criterion="l1", ratio=0.5, widths={"stem.0": 4})
