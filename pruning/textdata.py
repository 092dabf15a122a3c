"""Labelled texts for a text classifier: your own file, or the built-in topic set.

``data: {file: texts.csv, text: text, label: label}`` reads a CSV (with a header row) or a
JSONL file (one object per line). The held-out split is taken by the recipe's seed
(``val_share`` of each class, default 0.2) unless ``val_file`` names a second file. Labels
are class names; the classes are the sorted distinct names of the training split.

``data: {builtin: topics}`` is the topic-labelled dialog lines of ``chatterbot-corpus``
(BSD-3): one class per topic file with at least :data:`MIN_PER_TOPIC` distinct lines, at most
:data:`MAX_PER_TOPIC` lines per class (chosen by a fixed seed), so no topic dominates.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruneguard.registry.errors import ConfigError

__all__ = ["LabelledTexts", "holdout", "load_file", "load_topics", "split"]

MIN_PER_TOPIC = 60
MAX_PER_TOPIC = 160
TOPICS_SEED = 0


@dataclass(frozen=True)
class LabelledTexts:
    """Training and held-out texts with class indices into ``class_labels``."""

    train_texts: tuple[str, ...]
    train_labels: np.ndarray
    val_texts: tuple[str, ...]
    val_labels: np.ndarray
    class_labels: tuple[str, ...]


def _rows(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        raise ConfigError(f"data.file={str(path)!r}: no such file; give a CSV or JSONL path")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            lines = path.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"data.file={str(path)!r} cannot be read ({exc}); save it as UTF-8"
        ) from exc
    raise ConfigError(f"data.file={str(path)!r}: must end in .csv or .jsonl")


def load_file(path: Path, *, text: str, label: str | None) -> tuple[list[str], list[str] | None]:
    """The texts (and label names) of a CSV or JSONL file."""
    rows = _rows(path)
    if not rows:
        raise ConfigError(f"data.file={str(path)!r} holds no rows")
    for column in (text, label):
        if column is not None and column not in rows[0]:
            raise ConfigError(
                f"data.file={str(path)!r} has no column {column!r}; its columns are "
                f"{sorted(map(str, rows[0]))}: set data.text / data.label to one of them"
            )
    texts, labels = [], []
    for i, row in enumerate(rows, start=1):
        value = row.get(text)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"data.file={str(path)!r} row {i}: {text!r} is empty or not text")
        texts.append(value)
        if label is not None:
            name = row.get(label)
            if name is None or str(name) == "":
                raise ConfigError(f"data.file={str(path)!r} row {i}: {label!r} is empty")
            labels.append(str(name))
    return texts, labels if label is not None else None


def split(
    texts: Sequence[str], labels: Sequence[str], *, val_share: float, seed: int
) -> LabelledTexts:
    """A stratified held-out split (``val_share`` of each class, at least one text)."""
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ConfigError(f"the labels hold {len(classes)} class; a classifier needs at least 2")
    rng = np.random.default_rng(seed)
    index = np.asarray([classes.index(name) for name in labels])
    val = np.zeros(len(texts), dtype=bool)
    for c in range(len(classes)):
        members = np.flatnonzero(index == c)
        if len(members) < 2:
            raise ConfigError(
                f"class {classes[c]!r} has {len(members)} text; each class needs at least 2 "
                "(one to train on, one held out)"
            )
        take = max(1, round(val_share * len(members)))
        val[rng.choice(members, size=take, replace=False)] = True
    return LabelledTexts(
        tuple(t for t, v in zip(texts, val, strict=True) if not v), index[~val],
        tuple(t for t, v in zip(texts, val, strict=True) if v), index[val], classes,
    )  # fmt: skip


def holdout(texts: Sequence[str], *, val_share: float, seed: int) -> tuple[list[str], list[str]]:
    """Unlabelled texts split into (train, held out): ``val_share`` of them, at least 2 held
    out (a neighbour needs another text) and 1 to train on, drawn by ``seed``."""
    take = max(2, round(val_share * len(texts)))
    if len(texts) < take + 1:
        raise ConfigError(
            f"data.file holds {len(texts)} texts; an encoder needs at least 3 (2 held out to "
            "compare, 1 to distil on): give more texts"
        )
    val = np.zeros(len(texts), dtype=bool)
    val[np.random.default_rng(seed).choice(len(texts), size=take, replace=False)] = True
    return [t for t, v in zip(texts, val, strict=True) if not v], [
        t for t, v in zip(texts, val, strict=True) if v
    ]


def with_val_file(
    train: tuple[list[str], list[str]], val: tuple[list[str], list[str]]
) -> LabelledTexts:
    classes = tuple(sorted(set(train[1])))
    unknown = sorted(set(val[1]) - set(classes))
    if unknown:
        raise ConfigError(
            f"data.val_file has labels {unknown[:5]} that the training file does not; "
            "every held-out class must be trained on"
        )
    index = {name: i for i, name in enumerate(classes)}
    return LabelledTexts(
        tuple(train[0]), np.asarray([index[n] for n in train[1]]),
        tuple(val[0]), np.asarray([index[n] for n in val[1]]), classes,
    )  # fmt: skip


def load_topics(seed: int) -> LabelledTexts:
    """The built-in topic set (chatterbot-corpus), split by ``seed``."""
    import yaml

    try:
        import chatterbot_corpus
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "data builtin topics needs the package chatterbot-corpus; install it with "
            "`pip install 'pruneguard[transformers]'`"
        ) from exc
    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    texts, labels = [], []
    rng = np.random.default_rng(TOPICS_SEED)
    for path in sorted(folder.glob("*.yml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        lines = sorted({str(x).strip() for c in raw.get("conversations", []) for x in c} - {""})
        if len(lines) < MIN_PER_TOPIC:
            continue
        chosen = rng.choice(len(lines), size=min(MAX_PER_TOPIC, len(lines)), replace=False)
        texts += [lines[i] for i in sorted(chosen)]
        labels += [path.stem] * len(chosen)
    return split(texts, labels, val_share=0.25, seed=seed)
