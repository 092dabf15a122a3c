"""A text classifier from your own folder and your own labelled file: the file is read and
split as promised, bad files and recipes get errors that name the fix, and the pruned
classifier is exported with its tokenizer, served on texts, and judged on held-out labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hf_models import make_hf_folder

from pruneguard.agent.features import stack_rows
from pruneguard.deploy.model import LoadedModel
from pruneguard.pruning import pipeline
from pruneguard.pruning.recipe import parse_recipe
from pruneguard.pruning.text import by_length
from pruneguard.pruning.textdata import load_file, load_topics, split, with_val_file
from pruneguard.registry.artifact import verify
from pruneguard.registry.errors import ConfigError

WORDS = {
    "sport": ["the match ended in a draw", "she scored twice in the final", "the team won again"],
    "food": ["the soup was too salty", "bake the bread for an hour", "fresh pasta with basil"],
    "tech": ["the laptop will not boot", "update the driver first", "the server ran out of disk"],
}


def _write_csv(path: Path, repeat: int = 4) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["body", "topic"])
        for n in range(repeat):
            for topic, texts in WORDS.items():
                writer.writerows([f"{t} ({n})", topic] for t in texts)
    return path


def test_csv_and_jsonl_read_the_named_columns(tmp_path: Path) -> None:
    texts, labels = load_file(_write_csv(tmp_path / "t.csv", 1), text="body", label="topic")
    assert len(texts) == 9 and labels is not None and set(labels) == set(WORDS)
    rows = [{"body": t, "topic": k} for k, ts in WORDS.items() for t in ts]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_file(tmp_path / "t.jsonl", text="body", label="topic") == (texts_sorted := [
        r["body"] for r in rows
    ], [r["topic"] for r in rows]) and len(texts_sorted) == 9  # fmt: skip


@pytest.mark.parametrize(
    ("content", "name", "words"),
    [
        ("body,topic\n", "x.csv", "no rows"),
        ("text,topic\nhello,a\n", "x.csv", "no column 'body'"),
        ('body,topic\n"",a\n', "x.csv", "row 1: 'body' is empty"),
        ("body,topic\nhi,a\n", "x.txt", "must end in .csv or .jsonl"),
        ('{"body": "hi"\n', "x.jsonl", "cannot be read"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, name: str, words: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=words):
        load_file(tmp_path / name, text="body", label="topic")


def test_the_split_is_stratified_and_follows_the_seed() -> None:
    texts = [f"t{i}" for i in range(40)]
    labels = ["a"] * 30 + ["b"] * 10
    one, two = (
        split(texts, labels, val_share=0.2, seed=1),
        split(texts, labels, val_share=0.2, seed=2),
    )
    assert sorted(np.bincount(one.val_labels).tolist()) == [2, 6]
    assert set(one.val_texts).isdisjoint(one.train_texts)
    assert one.val_texts != two.val_texts
    with pytest.raises(ConfigError, match="at least 2"):
        split(["x", "y"], ["a", "a"], val_share=0.5, seed=0)
    with pytest.raises(ConfigError, match=r"beyond|does not"):
        with_val_file((["x", "y"], ["a", "b"]), (["z"], ["c"]))


def test_the_built_in_topics_are_held_out_and_balanced() -> None:
    data = load_topics(0)
    assert len(data.class_labels) >= 5
    assert set(data.val_texts).isdisjoint(data.train_texts)
    counts = np.bincount(data.train_labels)
    assert counts.max() <= 3 * counts.min()


def test_recipe_errors_name_the_fix(tmp_path: Path) -> None:
    base = {"name": "t", "model": {"builtin": "minilm-topics"}, "method": "head",
            "target": {"heads": 0.25}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.label is missing"):
        parse_recipe({**base, "data": {"file": "x.csv"}})
    # an encoder's file needs no label: its neighbours are judged against the dense model's
    embed = parse_recipe({**base, "task": "embedding", "data": {"file": "x.csv"}})
    assert embed.data.label is None and embed.data.file == Path("x.csv")
    with pytest.raises(ConfigError, match="val_share"):
        parse_recipe({**base, "data": {"file": "x.csv", "label": "y", "val_share": 1.5}})
    with pytest.raises(ConfigError, match=r"only data\.file takes"):
        parse_recipe({**base, "data": {"builtin": "digits", "label": "y"}})


def test_text_summaries_are_the_drift_columns() -> None:
    rows = [{"chars": 10, "tokens": 4, "truncated": False, "text": "x"}, {"chars": 3, "tokens": 2}]
    np.testing.assert_array_equal(stack_rows(rows), [[10, 4], [3, 2]])


@pytest.mark.slow  # training, two exports: ~20 s
def test_own_classifier_from_a_file_is_pruned_exported_and_served(tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "bert", "bert")
    recipe = parse_recipe({
        "name": "topics-tiny", "model": {"hf": str(folder)},
        "data": {"file": str(_write_csv(tmp_path / "t.csv")), "text": "body", "label": "topic"},
        "train": {"epochs": 3, "lr": 1e-3}, "method": ["head", "ffn"],
        "target": {"heads": 0.25, "ffn": 0.5},
        "finetune": {"epochs": 1, "lr": 1e-3, "distill": True},
        "export": {"batch_sizes": [1], "latency_blocks": 1, "latency_runs": 2},
        "embedding": {"calibration": 8, "batch_size": 8, "seq_len": 32},
    })  # fmt: skip
    _, pruned_m = pipeline.run(recipe, tmp_path / "out", progress=False)
    assert verify(tmp_path / "out" / "pruned") == pruned_m
    io = pruned_m["io"]
    assert io["task"] == "classification" and io["class_labels"] == sorted(WORDS)
    assert pruned_m["metrics"]["validation_rows"] == 6  # round(0.2 × 12) = 2 texts per class
    m = pruned_m["metrics"]
    assert m["parity_max_abs_diff"] <= 1e-4
    # the same summary figures as every other pipeline's manifest (the CLI and demo print them)
    assert m["accuracy_drop"] == pytest.approx(m["baseline_accuracy"] - m["accuracy"])
    assert m["macs_reduction"] == pytest.approx(1 - m["macs"] / m["baseline_macs"])
    assert m["macs_reduction"] > 0
    assert m["baseline_onnx_bytes"] > m["onnx_bytes"] > 0
    assert pruned_m["pruning"]["distillation"]["loss"] == "hidden_states_mse + logits_kl"
    model = LoadedModel.load(tmp_path / "out" / "pruned", tag="topics-tiny:p")
    out = model.predict(model.encode(["the team won the final", "salty soup"])[0])
    assert out.outputs.shape == (2, 3) and set(out.classes.tolist()) <= {0, 1, 2}
    np.testing.assert_allclose(out.outputs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.n_classes == 3


def test_length_batches_cover_every_text_once_shortest_first() -> None:
    texts = ["a" * n for n in (5, 1, 9, 3, 7, 2, 8)]
    batches = by_length(texts, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    lengths = [len(texts[i]) for b in batches for i in b]
    assert lengths == sorted(lengths)
