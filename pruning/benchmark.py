"""`pruneguard bench A.onnx B.onnx`: ONNX Runtime latency of two models, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pruneguard.registry.errors import ConfigError

__all__ = ["bench_onnx_pair", "random_feed"]

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}


def random_feed(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs shaped like the session's single input; the symbolic batch axis = ``batch``."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(
            f"bench needs models with one input; this one has {[i.name for i in inputs]}."
        )
    spec = inputs[0]
    shape = [batch if i == 0 else d for i, d in enumerate(spec.shape)]
    if not all(isinstance(d, int) for d in shape):
        raise ConfigError(
            f"input {spec.name!r} has shape {spec.shape}: only the batch axis may be symbolic "
            "for bench. Fix: export with fixed non-batch dimensions."
        )
    if spec.type not in _DTYPES:
        raise ConfigError(
            f"input {spec.name!r} has type {spec.type}; bench supports {sorted(_DTYPES)}."
        )
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(shape).astype(_DTYPES[spec.type])}


def _signature(session: Any) -> tuple[str, list[Any], str]:
    spec = session.get_inputs()[0]
    return spec.name, list(spec.shape[1:]), spec.type


def bench_onnx_pair(
    a: str | Path,
    b: str | Path,
    *,
    batch_sizes: Sequence[int] = (1, 8),
    blocks: int = 6,
    runs_per_block: int = 11,
    threads: int | None = None,
) -> dict[str, Any]:
    """Latency of ``a`` and ``b`` per batch size, in alternating blocks, and a's p50 / b's p50.

    Both models must take the same input (name, non-batch shape, dtype): each batch size
    feeds the same random tensor to both.
    """
    from pruneguard.pruning.latency import compare_latency, make_session

    sessions = {"a": make_session(a, threads), "b": make_session(b, threads)}
    if _signature(sessions["a"]) != _signature(sessions["b"]):
        raise ConfigError(
            f"models take different inputs: {a} {_signature(sessions['a'])} vs "
            f"{b} {_signature(sessions['b'])}. Fix: compare versions of the same model."
        )
    latency: dict[str, dict[str, dict[str, float]]] = {"a": {}, "b": {}}
    speedup: dict[str, float] = {}
    for batch in batch_sizes:
        feed = random_feed(sessions["a"], batch)
        stats = compare_latency(sessions, feed, blocks=blocks, runs_per_block=runs_per_block)
        for label in ("a", "b"):
            latency[label][str(batch)] = stats[label].as_dict()
        speedup[str(batch)] = stats["a"].p50_ms / stats["b"].p50_ms
    return {"a": str(a), "b": str(b), "latency_ms": latency, "speedup": speedup}
