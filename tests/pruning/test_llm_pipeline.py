"""A ``task: causal-lm`` recipe through the one pipeline, on a small random Llama folder:
both artifacts hold genai's graph, its config and tokenizer, and ``hf/``; what the manifest
says matches what the files do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from decoders import HEAD_DIM, KV_HEADS, LAYERS

from pruneguard.pruning import genai
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.models.smollm2 import load_causal_lm
from pruneguard.registry.artifact import read_manifest, verify
from pruneguard.registry.decoder_graph import genai_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_out(decoder_artifacts: tuple[Path, Path]) -> tuple[Path, dict, dict]:
    dense, pruned = decoder_artifacts
    return dense.parent, read_manifest(dense), read_manifest(pruned)


def test_the_manifests_describe_the_cut_and_both_artifacts_verify(run_out) -> None:  # type: ignore[no-untyped-def]
    out, dense, pruned = run_out
    for kind in ("dense", "pruned"):
        verify(out / kind)  # every file's sha256, including hf/ and genai's config
    assert pruned["io"]["task"] == dense["io"]["task"] == "causal-lm"
    m = pruned["metrics"]
    # 3 layers x 3 KV heads x 16 x (k, v) x 4 bytes → 2 layers x 2 KV heads
    assert dense["metrics"]["kv_bytes_per_token"] == LAYERS * KV_HEADS * HEAD_DIM * 2 * 4
    assert m["baseline_kv_bytes_per_token"] == dense["metrics"]["kv_bytes_per_token"]
    assert m["kv_bytes_per_token"] == (LAYERS - 1) * (KV_HEADS - 1) * HEAD_DIM * 2 * 4
    assert m["params"] < m["baseline_params"]
    assert m["parity_max_abs_diff"] < 1e-4
    for key in ("perplexity", "teacher_forced_agreement", "shadow_token_agreement",
                "shadow_logprob_gap", "decode_speedup"):  # fmt: skip
        assert key in m, key
    assert dense["metrics"]["teacher_forced_agreement"] == 1.0
    assert m["agreement_with_baseline"] == pytest.approx(m["teacher_forced_agreement"])
    assert m["latency_ms"]["1"]["decode_tokens_per_s"] > 0
    assert len(pruned["pruning"]["dropped_layers"]) == 1
    assert pruned["pruning"]["recovery_minutes"] >= 0
    assert pruned["parent"]["sha256"] == dense["files"]["model.onnx"]


def test_the_transformers_folder_reloads_as_the_cut_and_matches_the_graph(run_out) -> None:  # type: ignore[no-untyped-def]
    out, _, _ = run_out
    config = json.loads((out / "pruned" / "hf" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_key_value_heads"]) == (
        LAYERS - 1,
        KV_HEADS - 1,
    )
    assert config["head_dim"] == HEAD_DIM and config["intermediate_size"] == 72
    model, tokenizer = load_causal_lm(out / "pruned" / "hf")
    ids = np.array([tokenizer("The river ran past the old mill.")["input_ids"]], dtype=np.int64)
    session = make_session(out / "pruned" / "model.onnx")
    feeds = genai.empty_cache_feeds(session, ids, genai.head_size(out / "pruned"))
    (graph, *_) = session.run(["logits"], feeds)
    with torch.no_grad():
        torch_logits = model(input_ids=torch.from_numpy(ids), use_cache=False).logits.numpy()
    assert np.abs(graph - torch_logits).max() < 1e-4


def test_genai_generates_from_the_artifact_folder_as_transformers_does(run_out) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime_genai as og

    out, _, _ = run_out
    model, tokenizer = load_causal_lm(out / "pruned" / "hf")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
        tokenize=True, return_dict=True,
    )["input_ids"]  # fmt: skip
    served = genai_model(out / "pruned", threads=1)
    params = og.GeneratorParams(served)
    params.set_search_options(max_length=len(prompt) + 10, do_sample=False)
    generator = og.Generator(served, params)
    generator.append_tokens(list(prompt))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()  # fmt: skip
    assert tokens == ref[: len(tokens)] and len(tokens) >= 1
