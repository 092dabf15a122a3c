"""The built-in decoder, SmolLM2-135M-Instruct: converted from its package, cut, reloaded."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pruneguard.pruning.methods import decoder as dec
from pruneguard.pruning.models.smollm2 import load_causal_lm, smollm2_folder
from pruneguard.pruning.tasks import causal_lm as lm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("home")
    folder = smollm2_folder(home)
    assert folder == home / "models" / "smollm2-135m"
    assert smollm2_folder(home) == folder  # converted once, then found
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no staging left
    return load_causal_lm(folder)


def test_the_built_in_decoder_is_a_gqa_llama_that_answers_chat(smollm2) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = smollm2
    shape = dec.shape_of(model)
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn) == (
        30,
        9,
        3,
        64,
        1536,
    )
    assert shape.kv_bytes_per_token() == 46_080
    (reply,) = lm.answer(model, tokenizer, ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in tokenizer.decode(reply.tokens)
    (sequence,) = lm.text_sequences(tokenizer, ["The cat sat."])
    assert tokenizer.convert_ids_to_tokens(sequence[:1]) == ["<|endoftext|>"]


def test_one_kv_group_fewer_per_layer_reloads_with_identical_logits(
    smollm2, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    model, tokenizer = smollm2
    plan = dec.DecoderPlan(kv_groups=tuple((0, 2) if i % 2 else (1, 2) for i in range(30)))
    cut = dec.apply_plan(copy.deepcopy(model), plan)
    assert dec.shape_of(cut).kv_bytes_per_token() == 30_720
    assert (cut.config.num_attention_heads, cut.config.num_key_value_heads) == (6, 2)
    batch = lm.batches(
        lm.text_sequences(tokenizer, ["A short test.", "Two more words here."]), size=2, pad_id=0
    )[0]
    with torch.no_grad():
        before = cut(input_ids=batch[0], attention_mask=batch[1]).logits
        cut.save_pretrained(tmp_path)
        again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
        assert torch.equal(again(input_ids=batch[0], attention_mask=batch[1]).logits, before)
