"""A real registry (SQLite + BentoML store in a temp home) with a pruned champion and a dense
shadow from the artifact factory, and traffic written to the real prediction log with the
two real ONNX models' answers; an agent configuration fast enough for tests and a reader for
its metrics."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from pruneguard.agent.loop import Agent, AgentConfig, replace_config

MODEL = "digits"


@dataclass
class Env:
    registry: Any
    champion: str  # pruned, seed 1 (promoted second)
    shadow: str  # dense, seed 2 (champion before: the rollback target)
    home: Path

    def predict(self, tag: str, features: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(self.registry.path(tag) / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        (logits,) = session.run(None, {"input": features.reshape(-1, 1, 8, 8)})
        return np.asarray(logits).argmax(axis=1)


def make_env(home: Path, artifact_factory: Any, db_url: str | None = None) -> Env:
    from pruneguard.registry import open_registry

    registry = open_registry(db_url, home=home)
    dense = registry.register(artifact_factory(name=MODEL, kind="dense", seed=2), actor="test").tag
    pruned = registry.register(
        artifact_factory(name=MODEL, kind="pruned", seed=1), actor="test"
    ).tag
    registry.promote(dense, actor="test", reason="first")
    registry.promote(pruned, actor="test", reason="pruned passed review", shadow_previous=True)
    return Env(registry, pruned, dense, home)


def write_traffic(
    env: Env,
    n: int,
    *,
    rng: np.random.Generator,
    labels: str = "shadow",
    shift: float = 0.0,
    ts: float | None = None,
) -> np.ndarray:
    """``n`` requests answered by both variants; ``labels``: "shadow" (the shadow is right),
    "champion" (the champion is right) or "none". Features like the reference (uniform 0..16),
    plus ``shift``."""
    from sqlalchemy import insert

    from pruneguard.registry.predictions import PredictionLog, feedback

    features = (rng.uniform(0, 16, size=(n, 64)) + shift).astype(np.float32)
    ts = time.time() if ts is None else ts
    answers = {
        v: env.predict(tag, features)
        for v, tag in (("champion", env.champion), ("shadow", env.shadow))
    }
    log = PredictionLog(env.registry.engine)
    ids = [uuid.uuid4().hex for _ in range(n)]
    rows = [
        {
            "request_id": rid,
            "ts": ts,
            "model": MODEL,
            "variant": variant,
            "version": tag.split(":", 1)[1],
            "features": features[i].tolist(),
            "prediction": int(answers[variant][i]),
            "probabilities": [],
            "latency_ms": 0.1,
        }
        for variant, tag in (("champion", env.champion), ("shadow", env.shadow))
        for i, rid in enumerate(ids)
    ]
    log.write_predictions(rows)
    if labels != "none":  # one batch (PredictionLog.write_feedback is one request at a time)
        with env.registry.engine.begin() as conn:
            conn.execute(
                insert(feedback),
                [
                    {"request_id": rid, "ts": ts, "label": int(answers[labels][i])}
                    for i, rid in enumerate(ids)
                ],
            )
    return features


FAST = replace_config(
    AgentConfig(interval_s=1.0, window_s=3600.0, report_every_s=math.inf, report_on_rollback=False),
    threshold=2,
    cooldown_s=600.0,
    min_labelled_pairs=100,
    min_pairs=100,
    min_drift_rows=50,
)


def samples(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = agent.metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(agent: Agent, name: str, **labels: str) -> float:
    return samples(agent)[(name, tuple(sorted({"model": MODEL, **labels}.items())))]
