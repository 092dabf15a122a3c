"""The embedding task: a sentence encoder, judged by paraphrase retrieval on held-out pairs
and by the mean cosine of its embeddings to the dense model's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.tasks import TextEval, frame, mean_cosine
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from pruneguard.pruning.recipe import Recipe

__all__ = ["EMBEDDING_NOTE", "EmbeddingAdapter", "retrieval"]

EMBEDDING_NOTE = (
    "Embedding model: metrics.accuracy / baseline_accuracy are paraphrase-retrieval accuracy on "
    "held-out pairs (pruning/data/paraphrases.tsv: is each sentence's paraphrase its nearest "
    "neighbour among all paraphrases?); metrics.mean_cosine_to_dense is the mean cosine between "
    "this model's and the dense model's embeddings of the same held-out sentences; "
    "agreement_with_baseline is the share of retrieval answers equal to the dense model's."
)


class EmbeddingAdapter:
    """A sentence encoder and the paraphrase pairs it is judged on."""

    note = EMBEDDING_NOTE
    # not "embedding": the exporter already names the output of aten.embedding that way
    output_name = "sentence_embedding"

    def __init__(self, recipe: Recipe, *, train_limit: int | None, eval_pairs: int | None) -> None:
        from pruneguard.pruning.text import (
            MINILM,
            load_encoder,
            load_minilm,
            load_paraphrases,
            load_sentences,
        )

        if recipe.model.hf is None and recipe.model.builtin != MINILM:
            raise ConfigError(
                f"model={recipe.model.builtin or recipe.model.factory!r} with task embedding: "
                f"use model: {{builtin: {MINILM}}} or your own folder, model: {{hf: PATH}}"
            )
        loaded = load_encoder(recipe.model.hf) if recipe.model.hf else load_minilm()
        self.model, self.tokenizer = loaded
        self.pairs = load_paraphrases()[:eval_pairs]
        self.train_texts: list[str] = load_sentences()[:train_limit]

    def evaluate(self, model: nn.Module) -> TextEval:
        """Paraphrase retrieval both ways: for a_i, is b_i the nearest b (and vice versa)?"""
        return retrieval(model, self.tokenizer, self.pairs)

    def metrics(self, side: TextEval, dense: TextEval) -> dict[str, Any]:
        return {
            "retrieval_accuracy": side.accuracy,
            "mean_cosine_to_dense": mean_cosine(side, dense),
        }

    def io(self, hidden: int) -> dict[str, Any]:
        return {
            "task": "embedding",
            "class_labels": [],
            "embedding": {"dim": hidden, "normalized": True, "pooling": self.model.pooling},
            "description": "texts → tokens (the artifact's tokenizer/) → "
            f"L2-normalised {self.model.pooling}-pooled sentence embedding",
        }

    def reference(self, evaluation: TextEval) -> pd.DataFrame:
        """Held-out embeddings as f0..fN, with the true and retrieved paraphrase index."""
        emb = evaluation.outputs
        return frame(
            {f"f{i}": emb[:, i].astype("float32") for i in range(emb.shape[1])}, evaluation
        )

    def sample_texts(self) -> list[str]:
        return [a for a, _ in self.pairs[:16]]

    def prepare(self, recipe: Recipe, say: Callable[[str], None]) -> None:
        if recipe.train is not None and recipe.train.epochs:
            raise ConfigError(
                "train: with task embedding: an encoder is pruned as it is; remove train"
            )


def retrieval(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> TextEval:
    from pruneguard.pruning.text import embed

    left = embed(model, tokenizer, [a for a, _ in pairs]).numpy()
    right = embed(model, tokenizer, [b for _, b in pairs]).numpy()
    sim = left @ right.T
    predictions = np.concatenate([sim.argmax(1), sim.argmax(0)])
    labels = np.concatenate([np.arange(len(pairs))] * 2)
    accuracy = float((predictions == labels).mean())
    return TextEval(np.concatenate([left, right]), predictions, labels, accuracy)
