"""Built-in models and the test zoo: shapes, layout, lookup errors."""

from __future__ import annotations

import pytest
import torch

from pruneguard.pruning.models import BUILTIN_MODELS, build_builtin
from pruneguard.pruning.models.zoo import ZOO, ZOO_INPUT_SHAPE, build_zoo
from pruneguard.registry.errors import ConfigError


def test_builtin_names_include_the_engine_models() -> None:
    assert {"digits-cnn", "resnet50"} <= set(BUILTIN_MODELS)


def test_unknown_builtin_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="digits-cnn") as err:
        build_builtin("resnet-51")
    assert "resnet-51" in str(err.value)
    assert "resnet50" in str(err.value)


def test_digits_cnn_maps_8x8_digits_to_10_logits() -> None:
    model = build_builtin("digits-cnn").eval()
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_builtin_seed_makes_weights_reproducible() -> None:
    a = build_builtin("digits-cnn", seed=3).state_dict()
    b = build_builtin("digits-cnn", seed=3).state_dict()
    c = build_builtin("digits-cnn", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_resnet50_has_torchvision_layout_and_size() -> None:
    model = build_builtin("resnet50").eval()
    # torchvision's resnet50 has exactly 25,557,032 parameters and these module names.
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    keys = model.state_dict().keys()
    assert {
        "conv1.weight",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "fc.bias",
    } <= keys
    assert model.layer2[0].conv2.stride == (2, 2)  # stride on the 3×3 conv (v1.5)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_output_10_classes(name: str) -> None:
    model = build_zoo(name).eval()
    assert model(torch.randn(2, *ZOO_INPUT_SHAPE)).shape == (2, 10)


def test_zoo_models_have_the_structures_they_name() -> None:
    convs = {
        name: [m for m in build_zoo(name).modules() if isinstance(m, torch.nn.Conv2d)]
        for name in ZOO
    }
    assert any(c.groups == c.in_channels == c.out_channels > 1 for c in convs["depthwise"])
    assert any(c.groups == 4 for c in convs["grouped"])
    assert convs["mlp"] == []


def test_unknown_zoo_model_names_the_allowed_ones() -> None:
    with pytest.raises(KeyError, match="residual"):
        build_zoo("transformer")
