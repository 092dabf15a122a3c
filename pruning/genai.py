"""A decoder's ONNX graph, built and timed with onnxruntime-genai (the runtime that serves it).

:func:`build` turns a transformers folder into genai's model folder (``model.onnx`` with its
KV-cache inputs, ``genai_config.json``, the tokenizer files) with genai's model builder;
:func:`one_file` rewrites the graph without external data. :func:`time_decoders` measures
time to first token and decode tokens/s of several folders side by side as served: greedy,
one sequence, ``threads`` intra-op threads, in alternating blocks whose first run is dropped.

The same ``model.onnx`` also scores a whole sequence in one pass when fed an empty cache
(:func:`registry.decoder_graph.empty_cache_feeds`): how a dense shadow rates a champion's
tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.pruning.errors import BuildFailed, ConfigError
from pruneguard.registry.decoder_graph import GENAI_CONFIG as CONFIG
from pruneguard.registry.decoder_graph import empty_cache_feeds, genai_model, head_size

__all__ = [
    "CONFIG",
    "build",
    "empty_cache_feeds",
    "head_size",
    "one_file",
    "set_threads",
    "time_decoders",
]

BUILD_TIMEOUT_S = 1800


def build(hf_folder: Path, out: Path, *, cache: Path) -> None:
    """genai's model builder on ``hf_folder`` (fp32, CPU) into ``out``; its chatter is kept
    and shown only when it fails."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(hf_folder),
           "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(cache)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env)
    if done.returncode != 0 or not (out / CONFIG).is_file():
        tail = (done.stderr or done.stdout)[-1500:]
        raise BuildFailed(
            f"onnxruntime-genai's model builder failed on {hf_folder} (exit {done.returncode}): "
            f"{tail}; the decoder must be a Llama/Qwen-family model the builder supports"
        )


def one_file(src: Path, dest: Path) -> None:
    """``src`` (a graph with external data) rewritten as one file at ``dest`` (< 2 GB)."""
    import onnx

    model = onnx.load(str(src), load_external_data=True)
    if model.ByteSize() >= 2**31 - 1:
        raise ConfigError(
            f"{src}: a {model.ByteSize() / 2**30:.1f} GB graph does not fit one ONNX file "
            "(2 GB protobuf limit); pruneguard ships decoders under 2 GB"
        )
    onnx.save(model, str(dest))


def set_threads(folder: Path, threads: int) -> None:
    """Write the intra-op thread count into the folder's ``genai_config.json`` (0: ORT's)."""
    path = folder / CONFIG
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    if threads:
        options["intra_op_num_threads"] = threads
    else:
        options.pop("intra_op_num_threads", None)
    path.write_text(json.dumps(config, indent=4))


def _generate(model: Any, prompt: Sequence[int], new_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds for the ``new_tokens - 1`` after it), greedy."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    length = len(prompt) + new_tokens
    params.set_search_options(max_length=length, min_length=length, do_sample=False)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(list(prompt))
    generator.generate_next_token()
    first = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
    return first - start, time.perf_counter() - first


def time_decoders(
    folders: Mapping[str, Path],
    prompt: Sequence[int],
    *,
    new_tokens: int,
    threads: int,
    blocks: int,
    runs: int,
) -> dict[str, dict[str, float]]:
    """Per label: ``ttft_ms`` p50/p95 and ``decode_tokens_per_s`` (median), side by side."""
    if runs < 2 or new_tokens < 2:
        raise ValueError("runs and new_tokens must be at least 2 (the first run is dropped)")
    models = {label: genai_model(folder, threads) for label, folder in folders.items()}
    ttft: dict[str, list[float]] = {label: [] for label in models}
    rate: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(blocks):
        for label, model in models.items():
            for i in range(runs):
                first, rest = _generate(model, prompt, new_tokens)
                if i:
                    ttft[label].append(first * 1000.0)
                    rate[label].append((new_tokens - 1) / rest)
    return {
        label: {
            "p50": float(np.percentile(ttft[label], 50)),
            "p95": float(np.percentile(ttft[label], 95)),
            "mean": float(np.mean(ttft[label])),
            "runs": len(ttft[label]),
            "decode_tokens_per_s": float(np.median(rate[label])),
            "prompt_tokens": len(prompt),
            "new_tokens": new_tokens,
        }
        for label in models
    }
