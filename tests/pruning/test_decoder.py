"""Structural pruning of decoder LLMs on a small random Llama (GQA: 4 heads, 2 KV groups)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pruneguard.pruning.methods import decoder as dec
from pruneguard.pruning.methods import decoder_scores as ds

pytest.importorskip("transformers")


def tiny_llama(seed: int = 0, layers: int = 3):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,  # not hidden / heads: the cut must keep it explicit
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def batch(seed: int = 1, rows: int = 3, width: int = 12) -> ds.Batch:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, width - 4 :] = 0  # one padded row
    return ids, mask


def logits(model, b: ds.Batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(input_ids=b[0], attention_mask=b[1], use_cache=False).logits


def test_removing_a_kv_group_equals_gating_it_off_and_shrinks_the_cache() -> None:
    model = tiny_llama()
    b = batch()
    gates = torch.ones(3, 2)
    gates[:, 0] = 0.0  # group 0 off in every layer
    with ds.gate_groups(model, gates):
        expected = logits(model, b)
    before = dec.shape_of(model)
    cut = dec.apply_plan(copy.deepcopy(model), dec.DecoderPlan(kv_groups=((1,), (1,), (1,))))
    after = dec.shape_of(cut)
    torch.testing.assert_close(logits(cut, b), expected, atol=1e-5, rtol=1e-5)
    assert (after.heads, after.kv_heads, after.head_dim) == (2, 1, 16)
    assert after.kv_bytes_per_token() * 2 == before.kv_bytes_per_token()
    assert dec.params(cut) < dec.params(model)


def test_layers_may_keep_different_groups_but_the_same_count() -> None:
    model = tiny_llama()
    b = batch()
    gates = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    with ds.gate_groups(model, gates):
        expected = logits(model, b)
    cut = dec.apply_plan(copy.deepcopy(model), dec.DecoderPlan(kv_groups=((1,), (0,), (1,))))
    torch.testing.assert_close(logits(cut, b), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same number in every layer"):
        dec.remove_kv_groups(copy.deepcopy(model), ((1,), (0, 1), (1,)))


def test_ffn_cut_equals_zeroing_those_channels() -> None:
    model = tiny_llama()
    b = batch()
    keep = tuple(tuple(range(0, 48, 2)) for _ in range(3))
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in dec.decoder_layers(zeroed):
            layer.mlp.down_proj.weight[:, 1::2] = 0.0
    cut = dec.apply_plan(copy.deepcopy(model), dec.DecoderPlan(ffn=keep))
    assert cut.config.intermediate_size == 24
    torch.testing.assert_close(logits(cut, b), logits(zeroed, b), atol=1e-5, rtol=1e-5)


def test_dropped_layers_are_renumbered_and_generation_with_a_cache_works() -> None:
    model = tiny_llama(layers=4)
    cut = dec.apply_plan(copy.deepcopy(model), dec.DecoderPlan(drop=(1, 2)))
    assert cut.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in dec.decoder_layers(cut)] == [0, 1]
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        cached = cut.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        uncached = cut.generate(
            ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0
        )
    assert torch.equal(cached, uncached)


def test_a_cut_folder_reloads_with_identical_logits(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_llama(layers=4)
    plan = dec.DecoderPlan(
        kv_groups=((0,), (1,), (1,), (0,)), ffn=tuple(tuple(range(32)) for _ in range(4)), drop=(2,)
    )
    cut = dec.apply_plan(model, plan)
    b = batch()
    before = logits(cut, b)
    cut.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert torch.equal(logits(again, b), before)
    assert dec.shape_of(again) == dec.shape_of(cut)


def test_ablation_finds_the_group_that_does_nothing() -> None:
    model = tiny_llama()
    with torch.no_grad():  # group 1 of layer 2 writes nothing: removing it changes nothing
        q_rows, _ = dec.group_channels(dec.shape_of(model), [1])
        dec.decoder_layers(model)[2].self_attn.o_proj.weight[:, q_rows] = 0.0
    scores = ds.kv_group_scores(model, [batch(), batch(seed=2)], "ablation")
    assert scores.shape == (3, 2)
    assert scores[2, 1] == pytest.approx(0.0, abs=1e-7)
    assert (scores[2, 0] > 1e-4).item()
    assert ds.keep_top(scores, 1)[2] == (0,)


def test_taylor_and_activation_scores_see_dead_parts() -> None:
    model = tiny_llama()
    with torch.no_grad():
        q_rows, _ = dec.group_channels(dec.shape_of(model), [0])
        dec.decoder_layers(model)[1].self_attn.o_proj.weight[:, q_rows] = 0.0
        dec.decoder_layers(model)[0].mlp.down_proj.weight[:, 5] = 0.0
    batches = [batch(), batch(seed=3)]
    taylor = ds.kv_group_scores(model, batches, "taylor")
    assert taylor[1, 0] == 0.0 and taylor[1, 1] > 0.0
    for criterion in ds.FFN_CRITERIA:
        ffn = ds.ffn_scores(model, batches, criterion)
        assert ffn.shape == (3, 48)
        assert ffn[0, 5] == 0.0 and (ffn[0] > 0).sum() == 47, criterion
    assert all(p.grad is None for p in model.parameters())


def test_block_influence_is_zero_for_a_block_that_passes_its_input_through() -> None:
    model = tiny_llama(layers=4)
    with torch.no_grad():  # layer 1 adds nothing to the residual stream
        layer = dec.decoder_layers(model)[1]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    influence = ds.block_influence(model, [batch()])
    assert influence[1] == pytest.approx(0.0, abs=1e-6)
    assert (influence[[0, 2, 3]] > 1e-4).all()
    assert ds.lowest(influence, 1) == (1,)


def test_bad_plans_are_refused_with_what_is_allowed() -> None:
    model = tiny_llama()
    with pytest.raises(ValueError, match="keep between 1 and 2"):
        dec.remove_kv_groups(model, ((), (), ()))
    with pytest.raises(ValueError, match="plan for 2 layers"):
        dec.shrink_ffn(model, ((0,), (0,)))
    with pytest.raises(ValueError, match="at least one layer left"):
        dec.drop_layers(model, (0, 1, 2))
    with pytest.raises(ValueError, match="allowed: ablation, taylor, l2"):
        ds.kv_group_scores(model, [batch()], "magnitude")
