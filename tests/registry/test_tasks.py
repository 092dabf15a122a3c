"""The task contract (DESIGN §3.8): decoding and comparing answers per task."""

from __future__ import annotations

import numpy as np
import pytest

from pruneguard.registry.errors import ArtifactError
from pruneguard.registry.tasks import (
    EMBEDDING_AGREE_COSINE,
    Classification,
    Decoded,
    Embedding,
    task_for,
    task_name,
)


def test_a_manifest_without_task_reads_as_classification() -> None:
    assert task_name({"io": {"inputs": []}}) == "classification"
    assert task_name({}) == "classification"
    assert isinstance(task_for({"io": {}}, output_name="logits"), Classification)
    assert task_for({"io": {}}, output_name="probabilities").outputs_probabilities  # type: ignore[attr-defined]


def test_unknown_tasks_are_refused_by_name() -> None:
    with pytest.raises(ArtifactError, match=r"'regression'.*classification, embedding"):
        task_name({"io": {"task": "regression"}})
    assert task_for({"io": {"task": "causal-lm"}}).name == "causal-lm"


def test_causal_lm_compares_by_the_shadows_rating_of_the_champions_tokens() -> None:
    task = task_for({"io": {"task": "causal-lm"}})
    champion = task.decode(np.array([[1.0, 0.0, 8.0], [1.0, 0.0, 4.0]]))
    shadow = task.decode(np.array([[1.0, 0.0, 8.0], [0.75, 0.9, 4.0]]))
    paired = task.compare(champion, shadow)
    assert paired.agree.tolist() == [True, False]
    np.testing.assert_allclose(paired.similarity, [1.0, 0.75])
    np.testing.assert_allclose(paired.distance, [0.0, 0.25])


def test_classification_decodes_logits_and_compares_by_class_and_total_variation() -> None:
    task = Classification()
    champion = task.decode(np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(champion.outputs.sum(axis=1), 1.0, rtol=1e-6)
    assert champion.classes.tolist() == [0, 1]
    shadow = Decoded(np.array([0, 0]), np.array([[0.5, 0.5], [0.9, 0.1]], dtype=np.float32))
    paired = task.compare(champion, shadow)
    assert paired.agree.tolist() == [True, False]
    np.testing.assert_allclose(paired.distance, np.abs(champion.outputs[:, 0] - [0.5, 0.9]))
    np.testing.assert_allclose(paired.similarity, 1 - paired.distance)
    assert task.body(champion)["predictions"] == [0, 1]


def test_embedding_compares_by_cosine_and_agrees_above_the_threshold() -> None:
    task = Embedding()
    champion = task.decode(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    angle = np.arccos(EMBEDDING_AGREE_COSINE) * 1.5  # just past the threshold
    shadow = task.decode(np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)], [0.0, -1.0]]))
    paired = task.compare(champion, shadow)
    np.testing.assert_allclose(paired.similarity, [1.0, np.cos(angle), -1.0], atol=1e-6)
    assert paired.agree.tolist() == [True, False, False]
    np.testing.assert_allclose(paired.distance, [0.0, (1 - np.cos(angle)) / 2, 1.0], atol=1e-6)
    assert (champion.classes == -1).all()
    assert task.body(champion) == {"embeddings": champion.outputs.tolist()}


def test_embedding_normalises_only_when_the_graph_does_not() -> None:
    raw = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(Embedding(normalize=True).decode(raw).outputs, [[0.6, 0.8]])
    assert Embedding().decode(raw).outputs.tolist() == [[3.0, 4.0]]
    manifest = {"io": {"task": "embedding", "embedding": {"normalized": False}}}
    np.testing.assert_allclose(task_for(manifest).decode(raw).outputs, [[0.6, 0.8]])


def test_versions_with_different_output_sizes_cannot_be_compared() -> None:
    for task in (Classification(), Embedding()):
        a, b = task.decode(np.ones((1, 3))), task.decode(np.ones((1, 4)))
        with pytest.raises(ValueError, match="differ in shape"):
            task.compare(a, b)


def test_score_tokens_rates_a_scorers_first_choice_and_the_gap_to_it() -> None:
    from pruneguard.registry.tasks import score_tokens

    logprobs = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]))
    scores = score_tokens(logprobs, np.array([0, 2, 0]))
    assert scores.agree.tolist() == [True, False, True]
    assert scores.agreement == pytest.approx(2 / 3)
    assert scores.gap.tolist() == pytest.approx([0.0, np.log(0.6 / 0.3), 0.0])
    with pytest.raises(ValueError, match=r"expected \[T, vocab\] and \[T\]"):
        score_tokens(logprobs, np.array([0, 1]))
    empty = score_tokens(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert np.isnan(empty.agreement) and np.isnan(empty.mean_gap)
