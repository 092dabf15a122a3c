"""The embedding task: a sentence encoder, judged by paraphrase retrieval on held-out pairs
and by the mean cosine of its embeddings to the dense model's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.tasks import TextEval, frame, mean_cosine
from pruneguard.pruning.tasks.losses import DistillLoss, HiddenStates
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from pruneguard.pruning.recipe import Recipe

__all__ = [
    "EMBEDDING_NOTE",
    "TEXTS_NOTE",
    "EmbeddingAdapter",
    "TextsEmbeddingAdapter",
    "embedding_adapter",
    "neighbours",
    "retrieval",
]

EMBEDDING_NOTE = (
    "Embedding model: metrics.accuracy / baseline_accuracy are paraphrase-retrieval accuracy on "
    "held-out pairs (pruning/data/paraphrases.tsv: is each sentence's paraphrase its nearest "
    "neighbour among all paraphrases?); metrics.mean_cosine_to_dense is the mean cosine between "
    "this model's and the dense model's embeddings of the same held-out sentences; "
    "agreement_with_baseline is the share of retrieval answers equal to the dense model's."
)


TEXTS_NOTE = (
    "Embedding model on your texts (data.file): metrics.accuracy / baseline_accuracy are "
    "nearest-neighbour accuracy on the held-out texts: with data.label, the share whose nearest "
    "other held-out text has the same label; without, the share whose nearest neighbour is the "
    "one the dense model finds (the dense model scores 1.0 by definition). "
    "metrics.mean_cosine_to_dense is the mean cosine between this model's and the dense model's "
    "embeddings of the held-out texts."
)


class EmbeddingAdapter:
    """A sentence encoder and the paraphrase pairs it is judged on."""

    note = EMBEDDING_NOTE
    # not "embedding": the exporter already names the output of aten.embedding that way
    output_name = "sentence_embedding"
    distill_loss: DistillLoss = HiddenStates()

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


class TextsEmbeddingAdapter(EmbeddingAdapter):
    """A sentence encoder on your own texts (``data: {file: ...}``): distilled on the training
    split, judged on the held-out one by nearest neighbours (by label when the file has one)."""

    note = TEXTS_NOTE

    def __init__(self, recipe: Recipe, *, train_limit: int | None, eval_pairs: int | None) -> None:
        from pruneguard.pruning import textdata

        super().__init__(recipe, train_limit=train_limit, eval_pairs=0)
        spec = recipe.data
        if spec.file is None:
            raise ConfigError("TextsEmbeddingAdapter needs data.file; use EmbeddingAdapter")
        texts, labels = textdata.load_file(spec.file, text=spec.text, label=spec.label)
        self.val_labels: np.ndarray | None = None
        if labels is not None:
            if spec.val_file is not None:
                val = textdata.load_file(spec.val_file, text=spec.text, label=spec.label)
                data = textdata.with_val_file((texts, labels), (val[0], val[1] or []))
            else:
                data = textdata.split(texts, labels, val_share=spec.val_share, seed=recipe.seed)
            train, held = list(data.train_texts), list(data.val_texts)
            self.val_labels = data.val_labels
        elif spec.val_file is not None:
            train, held = texts, textdata.load_file(spec.val_file, text=spec.text, label=None)[0]
        else:
            train, held = textdata.holdout(texts, val_share=spec.val_share, seed=recipe.seed)
        if len(held) < 2:
            raise ConfigError(f"data.val_file holds {len(held)} text; give at least 2")
        self.train_texts = train[:train_limit]
        self.val_texts = held
        self._dense: np.ndarray | None = None  # the dense model's neighbours (no labels)

    def evaluate(self, model: nn.Module) -> TextEval:
        """Nearest neighbours among the held-out texts: the label of each text's nearest other
        text against its own, or (no labels) its neighbour against the dense model's."""
        from pruneguard.pruning.text import embed

        emb = embed(model, self.tokenizer, self.val_texts).numpy()
        nearest = neighbours(emb)
        if self.val_labels is not None:
            predictions, truth = self.val_labels[nearest], self.val_labels
        else:
            if self._dense is None:
                self._dense = neighbours(embed(self.model, self.tokenizer, self.val_texts).numpy())
            predictions, truth = nearest, self._dense
        return TextEval(emb, predictions, truth, float((predictions == truth).mean()))

    def metrics(self, side: TextEval, dense: TextEval) -> dict[str, Any]:
        return {
            "neighbour_accuracy": side.accuracy,
            "mean_cosine_to_dense": mean_cosine(side, dense),
            "validation_rows": len(self.val_texts),
        }

    def sample_texts(self) -> list[str]:
        return self.val_texts[:16]


def neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine (the rows are normalised)."""
    sim = embeddings @ embeddings.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def embedding_adapter(
    recipe: Recipe, *, train_limit: int | None, eval_pairs: int | None
) -> EmbeddingAdapter:
    """The built-in sentences and paraphrase pairs, or your texts (``data.file``)."""
    if recipe.data.file is not None:
        return TextsEmbeddingAdapter(recipe, train_limit=train_limit, eval_pairs=eval_pairs)
    return EmbeddingAdapter(recipe, train_limit=train_limit, eval_pairs=eval_pairs)
