"""The graph of a ``causal-lm`` artifact (DESIGN §3.8): onnxruntime-genai's decoder graph,
``model.onnx`` beside its ``genai_config.json``.

genai runs it step by step with a KV cache to generate. Fed an *empty* cache (every
``past_key_values.*`` of length 0), the same graph gives the logits at every position of a
whole sequence in one pass: that is how the dense shadow rates a champion's tokens
(:func:`registry.tasks.score_sequence`), and how pruning checks the graph against torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.registry.errors import ArtifactError

__all__ = ["GENAI_CONFIG", "empty_cache_feeds", "genai_model", "head_size"]

GENAI_CONFIG = "genai_config.json"


def head_size(folder: Path) -> int:
    """The attention head size the folder's genai config declares (the graph leaves it
    symbolic)."""
    path = Path(folder) / GENAI_CONFIG
    try:
        return int(json.loads(path.read_text())["model"]["decoder"]["head_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{path}: no readable model.decoder.head_size ({exc}); rebuild the artifact with "
            "`pruneguard prune`"
        ) from exc


def genai_model(folder: Path, threads: int | None = None) -> Any:
    """An ``onnxruntime_genai.Model`` of the artifact ``folder``; ``threads`` overrides the
    config's intra-op threads (None or 0: the config's)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    if threads:
        options = {"intra_op_num_threads": threads}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return og.Model(config)


def empty_cache_feeds(session: Any, ids: np.ndarray, head_dim: int) -> dict[str, np.ndarray]:
    """Feeds that run the decoder graph over ``ids [batch, seq]`` from an empty KV cache."""
    feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            shape = (ids.shape[0], int(spec.shape[1]), 0, head_dim)
            feeds[spec.name] = np.zeros(shape, dtype=np.float32)
    return feeds
