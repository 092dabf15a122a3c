"""Converting nn.MultiheadAttention / nn.TransformerEncoderLayer to prunable attention."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pruneguard.pruning.methods.attention import (
    PrunableEncoderLayer,
    PrunableSelfAttention,
    convert_attention,
)
from pruneguard.pruning.methods.heads import find_heads, gate_heads, remove_heads
from pruneguard.registry.errors import ConfigError


def _encoder(*, batch_first: bool, norm_first: bool, layers: int = 2) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(
        32, 4, 64, batch_first=batch_first, norm_first=norm_first, activation="gelu"
    )
    return nn.TransformerEncoder(block, layers, enable_nested_tensor=False).eval()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("norm_first", [True, False])
def test_converted_encoder_matches_the_original(batch_first: bool, norm_first: bool) -> None:
    enc = _encoder(batch_first=batch_first, norm_first=norm_first)
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    converted = copy.deepcopy(enc)
    assert convert_attention(converted) == 2
    assert all(isinstance(layer, PrunableEncoderLayer) for layer in converted.layers)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), enc(x), atol=1e-5, rtol=0)
        keep = (
            ~pad if batch_first else (~pad).T
        )  # padded positions are undefined in torch's fast path
        got = converted(x, src_key_padding_mask=pad)[keep]
        want = enc(x, src_key_padding_mask=pad)[keep]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_standalone_multihead_self_attention_converts() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(1)
    net = Net().eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = net(x)
        convert_attention(net)
        got = net(x)
    assert isinstance(net.attn, PrunableSelfAttention)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_multihead_attention_with_kdim_is_refused() -> None:
    mha = nn.MultiheadAttention(16, 2, kdim=8, vdim=8)
    with pytest.raises(ConfigError, match="kdim/vdim"):
        PrunableSelfAttention.from_multihead(mha)


def test_removing_heads_equals_gating_them_to_zero() -> None:
    model = _encoder(batch_first=True, norm_first=False)
    convert_attention(model)
    sites = find_heads(model)
    plan = [[1, 3], [0]]
    gates = [torch.ones(4) for _ in sites]
    for gate, drop in zip(gates, plan, strict=True):
        gate[drop] = 0.0
    x = torch.randn(4, 6, 32)
    with torch.no_grad(), gate_heads(sites, gates):
        gated = model(x)
    remove_heads(sites, plan)
    with torch.no_grad():
        removed = model(x)
    assert [s.num_heads for s in sites] == [2, 3]
    assert [layer.self_attn.num_heads for layer in model.layers] == [2, 3]
    assert model.layers[0].self_attn.q_proj.weight.shape == (16, 32)
    assert model.layers[0].self_attn.out_proj.weight.shape == (32, 16)
    torch.testing.assert_close(removed, gated, atol=1e-5, rtol=0)
