"""all-MiniLM-L6-v2 (transformers 5): physical head removal and the embedding pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_cases import HEAD_PLAN, heads_removed_and_gated

from pruneguard.pruning import pipeline
from pruneguard.pruning.latency import make_session
from pruneguard.pruning.methods.heads import find_heads
from pruneguard.pruning.methods.layers import drop_layers
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.pruning.text import (
    SentenceEncoder,
    load_minilm,
    load_paraphrases,
    load_sentences,
    tokenize,
)
from pruneguard.registry.artifact import verify

SENTENCES = ["A quick test.", "The cat sat on the warm mat by the door.", "Hi", "Prune me gently."]


@pytest.fixture(scope="module")
def minilm() -> tuple[SentenceEncoder, object]:
    return load_minilm()


def test_heads_removed_from_bert_equal_gated_heads_and_layers_drop(
    minilm: tuple[SentenceEncoder, object],
) -> None:
    dense, tokenizer = minilm
    model = copy.deepcopy(dense)
    feeds = tokenize(tokenizer, SENTENCES)
    sites = find_heads(model)
    assert [s.num_heads for s in sites] == [12] * 6 and sites[0].head_dim == 32
    assert [len(drop) for drop in HEAD_PLAN] == [2, 0, 0, 3, 0, 1]
    removed, gated = heads_removed_and_gated(model, feeds)
    torch.testing.assert_close(removed, gated, atol=1e-5, rtol=0)
    attn = model.bert.encoder.layer[3].attention
    assert (attn.self.num_attention_heads, attn.self.all_head_size) == (9, 288)
    assert attn.self.query.weight.shape == (288, 384) and attn.output.dense.weight.shape == (
        384,
        288,
    )
    assert drop_layers(model, [4]) == [0, 1, 2, 3, 5]
    assert model.bert.config.num_hidden_layers == 5
    with torch.no_grad():
        assert model(**feeds).shape == (4, 384)


@pytest.mark.slow  # two dynamo ONNX exports of MiniLM: ~60-100 s on 2 cores
def test_embedding_run_writes_verified_artifacts(tmp_path: Path, pruneguard_home: Path) -> None:
    recipe = parse_recipe({
        "name": "minilm-tiny",
        "task": "embedding",
        "model": {"builtin": "all-minilm-l6-v2"},
        "data": {"builtin": "sentences"},
        "method": "head",
        "criterion": "gradient",
        "target": {"heads": 0.1},
        "finetune": {"epochs": 1, "lr": 5e-5, "distill": True},
        "export": {"batch_sizes": [1], "latency_blocks": 1, "latency_runs": 2},
        "embedding": {"calibration": 8, "batch_size": 8, "train_sentences": 16, "eval_pairs": 24},
    })  # fmt: skip
    dense_m, pruned_m = pipeline.run(recipe, tmp_path / "out", progress=False)
    assert verify(tmp_path / "out" / "dense") == dense_m
    assert verify(tmp_path / "out" / "pruned") == pruned_m
    metrics = pruned_m["metrics"]
    assert pruned_m["pruning"]["heads_after"] == 72 - 7
    assert pruned_m["pruning"]["criterion_used"] == "taylor"
    assert metrics["kv_bytes_per_token"] == 2 * 65 * 32 * 4 < metrics["baseline_kv_bytes_per_token"]
    assert (
        metrics["parity_max_abs_diff"] <= 1e-4 and dense_m["metrics"]["parity_max_abs_diff"] <= 1e-4
    )
    assert (
        metrics["params"] < metrics["baseline_params"]
        and metrics["macs"] < metrics["baseline_macs"]
    )
    assert 0.5 < metrics["mean_cosine_to_dense"] <= 1.0 + 1e-6
    assert set(metrics["speedup"]) == {"1"}
    assert any("paraphrase-retrieval" in note for note in pruned_m["notes"])
    # dynamic batch and sequence axes: a shape the export never saw
    _, tokenizer = load_minilm()
    feeds = tokenize(tokenizer, SENTENCES[:3], pad_to=9)
    (out,) = make_session(tmp_path / "out" / "pruned" / "model.onnx").run(
        None, {k: v.numpy() for k, v in feeds.items()}
    )
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_shipped_sentence_sets_are_disjoint() -> None:
    pairs = load_paraphrases()
    train = load_sentences()
    held_out = {s for pair in pairs for s in pair}
    assert len(pairs) >= 200 and len(train) >= 300
    assert not held_out & set(train)
