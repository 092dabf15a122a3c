"""What differs between the tasks of :func:`pruning.pipeline.run`: one adapter per task.

A task adapter loads the model (and a text model's tokenizer) and the task's data, evaluates
a model on the held-out split, names the loss recovery distils with (:mod:`.losses`), and
says what the artifact holds for the task (its export spec: ``io``, metrics, reference
sample, notes). Everything else (scoring, pruning, recovery, export, parity, latency, the
artifacts) is shared.

- :mod:`.tensor_classification`: a classifier on one tensor input (CNNs, MLPs), labelled
  rows from the recipe's data (:class:`~.tensor_classification.TensorClassifier`).

- :mod:`.embedding`: a sentence encoder; "accuracy" is paraphrase retrieval on the held-out
  pairs, closeness to dense is the mean cosine of the embeddings.
- :mod:`.text_classification`: a sequence classifier on labelled texts (your file, or the
  built-in topics); accuracy on the held-out split, agreement with dense on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from pruneguard.pruning.recipe import Recipe
    from pruneguard.pruning.tasks.losses import DistillLoss

__all__ = ["TextAdapter", "TextEval", "frame", "mean_cosine", "text_adapter"]


@dataclass(frozen=True)
class TextEval:
    """A model's answers on the held-out texts."""

    outputs: np.ndarray  # embeddings (n, hidden) or class logits (n, classes)
    predictions: np.ndarray  # retrieved partner / class per row
    labels: np.ndarray  # true partner / class per row
    accuracy: float

    @property  # the embedding names, for benches written against them
    def embeddings(self) -> np.ndarray:
        return self.outputs

    @property
    def retrieval_accuracy(self) -> float:
        return self.accuracy


class TextAdapter(Protocol):
    model: Any  # SentenceEncoder | TextClassifier
    tokenizer: Any
    train_texts: list[str]
    note: str
    output_name: str
    distill_loss: DistillLoss  # what recovery matches in the dense teacher (.losses)

    def evaluate(self, model: nn.Module) -> TextEval: ...

    def metrics(self, side: TextEval, dense: TextEval) -> dict[str, Any]: ...

    def io(self, hidden: int) -> dict[str, Any]: ...

    def reference(self, evaluation: TextEval) -> pd.DataFrame: ...

    def sample_texts(self) -> list[str]: ...

    def prepare(self, recipe: Recipe, say: Callable[[str], None]) -> None: ...


def mean_cosine(a: TextEval, b: TextEval) -> float:
    """Mean cosine between two models' (normalised) embeddings of the same sentences."""
    return float((a.outputs * b.outputs).sum(1).mean())


def frame(columns: dict[str, np.ndarray], evaluation: TextEval) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(columns)
    frame["label"] = evaluation.labels.astype("int64")
    frame["prediction"] = evaluation.predictions.astype("int64")
    return frame


def text_adapter(
    recipe: Recipe, *, train_limit: int | None, eval_pairs: int | None, max_length: int
) -> TextAdapter:
    """The adapter of a text recipe's task."""
    from pruneguard.pruning.tasks.embedding import embedding_adapter
    from pruneguard.pruning.tasks.text_classification import ClassifierAdapter

    if recipe.task == "embedding":
        return embedding_adapter(recipe, train_limit=train_limit, eval_pairs=eval_pairs)
    return ClassifierAdapter(recipe, train_limit=train_limit, max_length=max_length)
