"""The text-classification task: a sequence classifier on labelled texts (your file, or the
built-in topics), judged by accuracy on the held-out split and agreement with dense on it.
The dense model is fine-tuned first when the recipe has ``train:`` (the built-in
classifier's head starts untrained)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pruneguard.pruning.recipe import TEXT_CLASSIFIER as MINILM_TOPICS
from pruneguard.pruning.tasks import TextEval, frame
from pruneguard.pruning.tasks.losses import DistillLoss, HiddenStatesAndLogits
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from pruneguard.pruning.recipe import Recipe

__all__ = ["CLASSIFIER_NOTE", "MINILM_TOPICS", "ClassifierAdapter", "labelled_texts"]

CLASSIFIER_NOTE = (
    "Text classifier: metrics.accuracy / baseline_accuracy are accuracy on the held-out split "
    "of the recipe's labelled texts; agreement_with_baseline is the share of held-out texts "
    "given the dense model's class. reference.parquet holds each held-out text's length in "
    "characters (f0) and tokens (f1), the drift features the service logs for a text."
)


class ClassifierAdapter:
    """A sequence classifier and its labelled texts."""

    note = CLASSIFIER_NOTE
    output_name = "logits"
    distill_loss: DistillLoss = HiddenStatesAndLogits()

    def __init__(self, recipe: Recipe, *, train_limit: int | None, max_length: int) -> None:
        from pruneguard.pruning.text import load_classifier, minilm_path

        data = labelled_texts(recipe)
        if recipe.model.hf is None and recipe.model.builtin != MINILM_TOPICS:
            raise ConfigError(
                f"model={recipe.model.builtin or recipe.model.factory!r} for a text classifier: "
                f"use model: {{builtin: {MINILM_TOPICS}}} or your own folder, model: {{hf: PATH}}"
            )
        folder = recipe.model.hf or minilm_path()
        self.model, self.tokenizer, names = load_classifier(folder, data.class_labels)
        remap = np.asarray([names.index(n) for n in data.class_labels])
        self.class_labels = names
        self.train_texts: list[str] = list(data.train_texts[:train_limit])
        self.train_labels = remap[data.train_labels][:train_limit]
        self.val_texts, self.val_labels = list(data.val_texts), remap[data.val_labels]
        self.max_length = max_length

    def logits(self, model: nn.Module, texts: Sequence[str]) -> np.ndarray:
        """Class logits for ``texts``, in their order (computed in length-sorted batches)."""
        import torch

        from pruneguard.pruning.text import by_length, tokenize

        batches = by_length(texts, 32)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [
                    model(**tokenize(self.tokenizer, [texts[i] for i in idx],
                                     max_length=self.max_length))
                    for idx in batches
                ]  # fmt: skip
        finally:
            model.train(was)
        out = torch.cat(parts).numpy() if parts else np.zeros((0, len(self.class_labels)))
        ordered = np.empty_like(out)
        ordered[[i for idx in batches for i in idx]] = out
        return ordered

    def evaluate(self, model: nn.Module) -> TextEval:
        logits = self.logits(model, self.val_texts)
        predictions = logits.argmax(1)
        accuracy = float((predictions == self.val_labels).mean())
        return TextEval(logits, predictions, self.val_labels, accuracy)

    def metrics(self, side: TextEval, dense: TextEval) -> dict[str, Any]:
        return {"validation_rows": len(self.val_texts)}

    def io(self, hidden: int) -> dict[str, Any]:
        return {
            "task": "classification",
            "class_labels": list(self.class_labels),
            "description": "texts → tokens (the artifact's tokenizer/) → class logits",
        }

    def reference(self, evaluation: TextEval) -> pd.DataFrame:
        counts = self.tokenizer(self.val_texts, truncation=True, max_length=self.max_length)
        tokens = np.asarray([len(ids) for ids in counts["input_ids"]], dtype="float32")
        chars = np.asarray([len(t) for t in self.val_texts], dtype="float32")
        return frame({"f0": chars, "f1": tokens}, evaluation)

    def sample_texts(self) -> list[str]:
        return self.val_texts[:16]

    def prepare(self, recipe: Recipe, say: Callable[[str], None]) -> None:
        """Fine-tune the dense classifier on the training texts (``train:``), with a cosine
        learning-rate decay, as the built-in CNN is trained."""
        import torch

        from pruneguard.pruning.text import tokenize

        if recipe.train is None or not recipe.train.epochs:
            return
        model, gen = self.model, torch.Generator().manual_seed(recipe.seed)
        steps = recipe.train.epochs * -(-len(self.train_texts) // 16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
        labels = torch.as_tensor(self.train_labels, dtype=torch.int64)
        model.train()
        try:
            for epoch in range(recipe.train.epochs):
                order = torch.randperm(len(self.train_texts), generator=gen).tolist()
                for i in range(0, len(order), 16):
                    idx = order[i : i + 16]
                    texts = [self.train_texts[j] for j in idx]
                    batch = tokenize(self.tokenizer, texts, max_length=self.max_length)
                    loss = torch.nn.functional.cross_entropy(model(**batch), labels[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                say(
                    f"train epoch {epoch + 1}/{recipe.train.epochs}: loss {float(loss.detach()):.4f}"
                )
        finally:
            model.eval()


def labelled_texts(recipe: Recipe) -> Any:
    """The recipe's labelled texts: ``data: {builtin: topics}`` or ``data: {file: ...}``."""
    from pruneguard.pruning import textdata

    spec = recipe.data
    if spec.builtin == "topics":
        return textdata.load_topics(recipe.seed)
    if spec.file is None or spec.label is None:
        raise ConfigError(
            "a text classifier needs labelled texts: data: {builtin: topics} or "
            "data: {file: texts.csv, text: text, label: label}"
        )
    texts, labels = textdata.load_file(spec.file, text=spec.text, label=spec.label)
    if spec.val_file is not None:
        val = textdata.load_file(spec.val_file, text=spec.text, label=spec.label)
        return textdata.with_val_file((texts, labels or []), (val[0], val[1] or []))
    return textdata.split(texts, labels or [], val_share=spec.val_share, seed=recipe.seed)
