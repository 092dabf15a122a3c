"""ONNX Runtime latency, measured side by side.

Two models are timed in alternating *blocks* of runs (A A A A, B B B B, A A A A, ...) and
the first run of each block is dropped. Interleaving single runs (A B A B) lets the bigger
model's cold caches punish the smaller one; blocks keep each model's working set warm, so
the ratio reflects the models and not their neighbour.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LatencyStats", "compare_latency", "make_session"]


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    mean_ms: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return {"p50": self.p50_ms, "p95": self.p95_ms, "mean": self.mean_ms, "runs": self.runs}


def make_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with full graph optimisation; ``threads`` 0 or None: ORT's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _stats(samples_s: Sequence[float]) -> LatencyStats:
    ms = np.asarray(samples_s) * 1000.0
    return LatencyStats(
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        mean_ms=float(ms.mean()),
        runs=len(ms),
    )


def compare_latency(
    sessions: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray],
    *,
    blocks: int = 6,
    runs_per_block: int = 11,
) -> dict[str, LatencyStats]:
    """Time each session on the same ``feeds`` in alternating blocks; drop each block's first run.

    ``sessions`` maps a label ("dense", "pruned") to an ONNX Runtime session whose inputs are
    the keys of ``feeds``. Returns one :class:`LatencyStats` per label.
    """
    if runs_per_block < 2:
        raise ValueError(f"runs_per_block={runs_per_block}: need at least 2 (the first is dropped)")
    samples: dict[str, list[float]] = {label: [] for label in sessions}
    feed = dict(feeds)
    for _ in range(blocks):
        for label, session in sessions.items():
            for i in range(runs_per_block):
                start = time.perf_counter()
                session.run(None, feed)
                elapsed = time.perf_counter() - start
                if i:
                    samples[label].append(elapsed)
    return {label: _stats(values) for label, values in samples.items()}
