"""FFN width pruning on tiny random-weight BERT, DistilBERT, RoBERTa and torch encoders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from pruneguard.pruning.methods.ffn import (
    FfnExhausted,
    FfnPruner,
    NoFfn,
    find_ffn,
    gate_neurons,
    kept_width,
    plan_neurons,
    remove_neurons,
    score_neurons,
)
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.pruning.text import SentenceEncoder
from pruneguard.pruning.transformer import prune_encoder
from pruneguard.registry.errors import ConfigError

transformers = pytest.importorskip("transformers")

WIDTH = 64  # intermediate size of every tiny model
VOCAB = 100


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=WIDTH, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(config)


def _distilbert() -> nn.Module:
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=WIDTH,
        max_position_embeddings=64,
    )  # fmt: skip
    return transformers.DistilBertModel(config)


def _roberta() -> nn.Module:
    config = transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=WIDTH, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.RobertaModel(config)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "bert": _bert,
    "distilbert": _distilbert,
    "roberta": _roberta,
}


def _make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[kind]().eval()


def _batch(seed: int = 0, n: int = 3, seq: int = 7) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, seq, dtype=torch.int64)
    mask[0, -2:] = 0  # one padded row
    return {"input_ids": torch.randint(3, VOCAB, (n, seq), generator=gen), "attention_mask": mask}


def _hidden(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch).last_hidden_state


def _plan(sites: list[Any], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(s.width, generator=gen)[: s.width // 2].tolist()) for s in sites]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_removed_neurons_equal_zero_gates(kind: str) -> None:
    model, batch = _make(kind), _batch()
    sites = find_ffn(model)
    assert len(sites) >= 2
    assert all(s.width == WIDTH for s in sites)
    plan = _plan(sites)
    gates = [torch.ones(s.width) for s in sites]
    for gate, drop in zip(gates, plan, strict=True):
        gate[drop] = 0.0
    with torch.no_grad(), gate_neurons(sites, gates):
        gated = _hidden(model, batch)
    remove_neurons(sites, plan)
    with torch.no_grad():
        removed = _hidden(model, batch)
    assert all(s.width == WIDTH // 2 for s in sites)
    torch.testing.assert_close(removed, gated, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_pruned_model_saves_and_reloads_with_transformers(kind: str, tmp_path: Path) -> None:
    model, batch = _make(kind), _batch()
    pruner = FfnPruner(model, criterion="taylor", target=0.5, calibration=[batch, _batch(1)],
                       forward=_hidden)  # fmt: skip
    pruner.step()
    report = pruner.report()
    assert set(report["ffn_width_after"].values()) == {WIDTH // 2}
    assert report["ffn_neurons_after"] * 2 == report["ffn_neurons_before"]
    width_key = "hidden_dim" if kind == "distilbert" else "intermediate_size"
    assert getattr(model.config, width_key) == WIDTH // 2
    model.save_pretrained(str(tmp_path))
    loaded = transformers.AutoModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(_hidden(loaded, batch), _hidden(model, batch))


@pytest.mark.parametrize(
    ("width", "fraction", "kept"), [(64, 0.5, 32), (64, 0.3, 48), (1536, 0.6, 616), (64, 0.05, 64)]
)
def test_kept_width_is_a_multiple_of_8_nearest_the_target(
    width: int, fraction: float, kept: int
) -> None:
    assert kept_width(width, fraction) == kept
    assert kept % 8 == 0 and abs((1 - kept / width) - fraction) <= 4 / width


def test_iterative_schedule_ramps_to_the_target_width() -> None:
    model = _make("bert")
    pruner = FfnPruner(model, criterion="magnitude", target={"ffn": 0.3}, steps=2)
    pruner.step()
    assert {s.width for s in pruner.sites} == {56}  # 64 · 0.85 = 54.4 → 56
    pruner.finish()
    assert {s.width for s in pruner.sites} == {48} and model.config.intermediate_size == 48


def test_a_target_that_rounds_to_no_neurons_is_refused() -> None:
    with pytest.raises(FfnExhausted, match=r"target.ffn=0.95 .* rounds to 0.*use target.ffn <="):
        kept_width(64, 0.95)
    with pytest.raises(ConfigError, match=r"target.ffn=1.5: must be > 0 and < 1"):
        FfnPruner(_make("bert"), criterion="magnitude", target=1.5)


def _dead_neuron(model: nn.Module, j: int) -> None:
    with torch.no_grad():
        for site in find_ffn(model):
            site.first().weight[j] = 0.0
            site.first().bias[j] = 0.0
            site.second().weight[:, j] = 0.0


@pytest.mark.parametrize("criterion", ["taylor", "gradient", "activation", "magnitude", "l1", "l2"])
def test_a_zeroed_neuron_scores_lowest(criterion: str) -> None:
    model = _make("bert")
    _dead_neuron(model, 5)
    sites = find_ffn(model)
    scores = score_neurons(
        model, sites, criterion, [_batch(0), _batch(1)], forward=_hidden,
        loss=lambda out, _batch: out.pow(2).mean(),
    )  # fmt: skip
    assert [int(s.argmin()) for s in scores] == [5] * len(sites)
    assert all(5 in drop for drop in plan_neurons(scores, WIDTH - 8))


def test_random_scores_are_seeded() -> None:
    sites = find_ffn(_make("bert"))
    a, b = (score_neurons(nn.Identity(), sites, "random", seed=3) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_torch_encoder_layers_are_converted_then_pruned() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=WIDTH, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    with pytest.raises(NoFfn, match="convert_attention"):
        find_ffn(model)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        dense = model(x)
    pruner = FfnPruner(model, criterion="activation", target=0.25, calibration=[x])
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense, atol=1e-5, rtol=0)  # conversion is exact
    sites = find_ffn(model)
    plan = _plan(sites)
    gates = [torch.ones(WIDTH).index_fill(0, torch.tensor(d), 0.0) for d in plan]
    with torch.no_grad(), gate_neurons(sites, gates):
        gated = model(x)
    remove_neurons(sites, plan)
    with torch.no_grad():
        torch.testing.assert_close(model(x), gated, atol=1e-5, rtol=0)
    assert pruner.report()["ffn_neurons_after"] == WIDTH


def test_models_without_ffn_and_bad_arguments_are_refused() -> None:
    with pytest.raises(NoFfn, match="use method channel"):
        find_ffn(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()))
    model = _make("bert")
    with pytest.raises(ConfigError, match=r"scope='global' for ffn: only scope layer"):
        FfnPruner(model, criterion="taylor", target=0.5, scope="global")
    with pytest.raises(ConfigError, match=r"criterion='ablation' for ffn: must be one of"):
        FfnPruner(model, criterion="ablation", target=0.5)
    with pytest.raises(ConfigError, match="needs calibration batches"):
        score_neurons(model, find_ffn(model), "taylor")
    with pytest.raises(ConfigError, match="use criterion taylor"):
        score_neurons(model, find_ffn(model), "gradient", [_batch()], forward=_hidden)


def _encoder() -> SentenceEncoder:
    torch.manual_seed(0)
    return SentenceEncoder(_bert()).eval()


def _sentences(seed: int) -> dict[str, Tensor]:
    batch = _batch(seed)
    return {**batch, "token_type_ids": torch.zeros_like(batch["input_ids"])}


COMBINED: dict[str, Any] = {
    "name": "tiny-fast",
    "task": "embedding",
    "model": {"builtin": "all-minilm-l6-v2"},
    "data": {"builtin": "sentences"},
    "method": ["ffn", "head", "layer"],
    "criterion": {"layer": "ablation"},
    "target": {"heads": 0.25, "ffn": 0.5, "layers": 1},
}


@pytest.mark.parametrize(("schedule", "recoveries"), [({"kind": "one-shot"}, [0, 1]),
                         ({"kind": "iterative", "steps": 2}, [0, 1, 2, 3, 4])])  # fmt: skip
def test_prune_encoder_runs_layers_heads_then_ffn(
    schedule: dict[str, Any], recoveries: list[int]
) -> None:
    recipe = parse_recipe({**COMBINED, "schedule": schedule})
    assert recipe.method == "layer+head+ffn"
    model, seen = _encoder(), []
    report = prune_encoder(model, recipe, [_sentences(0), _sentences(1)], seen.append)
    assert seen == recoveries
    assert report["criterion_used"] == {"layer": "ablation", "head": "taylor", "ffn": "taylor"}
    assert (report["layers_before"], report["layers_after"]) == (3, 2)
    assert (report["heads_before"], report["heads_after"]) == (8, 6)  # scored on 2 layers
    assert set(report["ffn_width_after"].values()) == {WIDTH // 2}
    assert len(report["ffn_width_after"]) == 2
    config = model.bert.config
    assert (config.num_hidden_layers, config.intermediate_size) == (2, WIDTH // 2)
    with torch.no_grad():
        assert model(**_sentences(2)).shape == (3, 32)


def test_prune_encoder_runs_a_single_ffn_stage_as_before() -> None:
    recipe = parse_recipe({**COMBINED, "method": "ffn", "criterion": "gradient",
                           "target": {"ffn": 0.25}})  # fmt: skip
    report = prune_encoder(_encoder(), recipe, [_sentences(0)], lambda _s: None)
    assert report["criterion_used"] == "taylor"  # label-free on an embedding model
    assert report["ffn_neurons_after"] == 3 * 48
