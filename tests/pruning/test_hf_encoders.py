"""Your own encoder from a local Hugging Face folder (``model: {hf: PATH}``): small random-weight
BERT, DistilBERT and RoBERTa folders built from configs (no download), each pruned by heads,
FFN width and layers together, exported with ORT parity, and answering texts as served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hf_models import FFN, HEADS, KINDS, LAYERS, make_hf_folder, tiny_recipe

from pruneguard.deploy.model import LoadedModel
from pruneguard.pruning import pipeline
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
    dense_m, pruned_m = pipeline.run(recipe, tmp_path / "out", progress=False)
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


@pytest.mark.slow  # two dynamo exports: ~15 s
@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
def test_own_encoder_on_own_texts_from_a_file(tmp_path: Path, labelled: bool) -> None:
    import csv

    from pruneguard.pruning.text import load_sentences

    texts = load_sentences()[:40]
    path = tmp_path / "texts.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["body", "topic"])
        writer.writerows([t, "odd" if i % 2 else "even"] for i, t in enumerate(texts))
    data = {"file": str(path), "text": "body", **({"label": "topic"} if labelled else {})}
    folder = make_hf_folder(tmp_path / "bert")
    recipe = tiny_recipe(folder, target={"heads": 0.5}, data=data)
    dense_m, pruned_m = pipeline.run(recipe, tmp_path / "out", progress=False)
    dense, pruned = dense_m["metrics"], pruned_m["metrics"]
    assert pruned["validation_rows"] == 8  # val_share 0.2 of 40 (stratified when labelled)
    assert 0 < pruned["mean_cosine_to_dense"] <= 1.0 + 1e-6
    assert pruned["parity_max_abs_diff"] <= 1e-4
    assert any("data.file" in note for note in pruned_m["notes"])
    if labelled:  # nearest-neighbour label accuracy: a random encoder is near chance
        assert 0.0 <= dense["accuracy"] <= 1.0
    else:  # neighbours agree with the dense model's: the dense model itself by definition
        assert dense["accuracy"] == 1.0
        assert pruned["accuracy"] == pruned["neighbour_accuracy"] <= 1.0


def test_an_encoder_needs_enough_texts_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    folder = make_hf_folder(tmp_path / "bert")
    recipe = tiny_recipe(folder, data={"file": str(path)})
    with pytest.raises(ConfigError, match=r"holds 2 texts; an encoder needs at least 3"):
        pipeline.run(recipe, tmp_path / "out", progress=False)


def test_a_text_classifier_file_still_needs_its_label_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text\na\nb\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.label is missing"):
        parse_recipe({
            "name": "x", "model": {"builtin": "minilm-topics"}, "data": {"file": str(path)},
            "method": "head", "target": {"heads": 0.25},
        })  # fmt: skip


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
