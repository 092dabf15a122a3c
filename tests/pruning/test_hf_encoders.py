"""Your own encoder from a local Hugging Face folder (``model: {hf: PATH}``): small random-weight
BERT, DistilBERT and RoBERTa folders built from configs (no download), each pruned by heads,
FFN width and layers together, exported with ORT parity, and answering texts as served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hf_models import FFN, HEADS, KINDS, LAYERS, make_hf_folder, tiny_recipe

from pruneguard.deploy.model import LoadedModel
from pruneguard.pruning import transformer
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.registry.artifact import verify
from pruneguard.registry.errors import ConfigError


@pytest.mark.slow  # two dynamo exports per architecture: ~15 s each
@pytest.mark.parametrize("kind", KINDS)
def test_own_encoder_pruned_by_heads_ffn_and_layers_is_served(tmp_path: Path, kind: str) -> None:
    folder = make_hf_folder(tmp_path / kind, kind)
    recipe = tiny_recipe(
        folder, method=["head", "ffn", "layer"], target={"heads": 0.25, "ffn": 0.5, "layers": 1}
    )
    dense_m, pruned_m = transformer.run(recipe, tmp_path / "out", progress=False)
    assert verify(tmp_path / "out" / "pruned") == pruned_m
    metrics = pruned_m["metrics"]
    assert metrics["parity_max_abs_diff"] <= 1e-4
    assert dense_m["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert metrics["params"] < dense_m["metrics"]["params"]
    report = pruned_m["pruning"]
    assert report["layers_after"] == LAYERS - 1
    assert report["heads_after"] < HEADS * (LAYERS - 1)
    names = [i["name"] for i in pruned_m["io"]["inputs"]]
    assert ("token_type_ids" in names) == (kind == "bert")
    model = LoadedModel.load(tmp_path / "out" / "pruned", tag=f"{kind}:pruned")
    texts = ["A short text.", "Another, somewhat longer, text about pruning models."]
    out = model.predict(model.encode(texts)[0])
    assert out.outputs.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out.outputs, axis=1), 1.0, atol=1e-5)
    assert report["ffn_neurons_after"] == report["ffn_neurons_before"] // 2
    assert set(report["ffn_width_after"].values()) == {FFN // 2}


def test_a_folder_without_config_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a Hugging Face model folder.*save_pretrained"):
        parse_recipe({
            "name": "x", "task": "embedding", "model": {"hf": str(tmp_path)},
            "data": {"builtin": "sentences"}, "method": "head", "target": {"heads": 0.25},
        })  # fmt: skip


def test_a_folder_with_weights_key_is_refused(tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "bert")
    with pytest.raises(ConfigError, match=r"model\.weights"):
        parse_recipe({
            "name": "x", "task": "embedding", "model": {"hf": str(folder), "weights": "w.st"},
            "data": {"builtin": "sentences"}, "method": "head", "target": {"heads": 0.25},
        })  # fmt: skip
