"""The agent on a decoder: the window's token agreement and log-prob gap (the dense
shadow's rating of the champion's answers, read from the prediction log) against the
offline values in the manifest. Served on the held-out prompts they reproduce those
values; a window whose answers the shadow rates worse fails, and the gap decides."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from serving_support import Models, wait_for

from pruneguard.agent.analysis import analyse, load_reference
from pruneguard.agent.checks import CheckConfig
from pruneguard.agent.policy import FAIL, INCONCLUSIVE, PASS, PolicyConfig, verdict
from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.runtime import Replica
from pruneguard.pruning.tasks import causal_lm as lm
from pruneguard.registry.artifact import read_manifest
from pruneguard.registry.predictions import PredictionLog, read_window

MODEL = "tiny-llm"


@pytest.mark.slow
def test_served_held_out_prompts_reproduce_the_offline_figures(decoder_models: Models) -> None:
    """The 4 held-out prompts the tiny recipe judged offline (8 new tokens each), served:
    genai generates what transformers did and ONNX Runtime rates it as torch did, so the
    window's per-request means are the manifest's."""
    config = ServeConfig(model=MODEL, home=decoder_models.home, log_flush_s=0.05,
                         shadow_mode="thread")  # fmt: skip
    replica = Replica(
        config, registry=decoder_models.registry,
        sink=PredictionLog(decoder_models.registry.engine),
        metrics=ServingMetrics(CollectorRegistry()),
    )  # fmt: skip
    prompts = lm.held_out_prompts()[:4]
    replica.start()
    try:
        for prompt in prompts:
            replica.generate(prompt=prompt, max_new_tokens=8)
        frame = wait_for(
            lambda: (f,) if len(f := read_window(decoder_models.registry.engine, MODEL, since_ts=0)) == 8 else None
        )[0]  # fmt: skip
    finally:
        replica.stop()
    path = decoder_models.registry.path(decoder_models.champion)
    manifest = read_manifest(path)
    analysis, window = analyse(
        frame, model=MODEL, champion=decoder_models.champion, shadow=decoder_models.shadow,
        manifest=manifest, reference=load_reference(path / "reference.parquet", None),
        config=CheckConfig(min_pairs=4, min_drift_rows=4),
    )  # fmt: skip
    metrics = manifest["metrics"]
    assert analysis.samples["pairs"] == 4
    assert analysis.agreement == pytest.approx(metrics["shadow_token_agreement_per_request"])
    assert analysis.logprob_gap == pytest.approx(
        metrics["shadow_logprob_gap_per_request"], abs=1e-4
    )
    checks = {c.name: c for c in analysis.checks}
    assert set(checks) == {"logprob_gap", "token_agreement", "drift"}
    assert checks["logprob_gap"].outcome in (PASS, INCONCLUSIVE)  # no decline by construction
    assert window.features.shape == (4, 2)  # the prompts' characters and tokens, for drift


def _frame(scores: np.ndarray) -> pd.DataFrame:
    """A window as read_window gives it: a champion and a shadow row per request."""
    rows: list[dict[str, Any]] = []
    for i, (agreement, gap) in enumerate(scores):
        common = {"request_id": f"r{i}", "label": None, "prediction": -1}
        rows.append({**common, "variant": "champion", "version": "p",
                     "probabilities": [1.0, 0.0, 8.0],
                     "features": {"chars": 30, "tokens": 40}})  # fmt: skip
        rows.append({**common, "variant": "shadow", "version": "d",
                     "probabilities": [float(agreement), float(gap), 8.0], "features": []})  # fmt: skip
    return pd.DataFrame(rows)


MANIFEST = {
    "io": {"task": "causal-lm", "inputs": [{"name": "input_ids", "shape": ["batch", "seq"]}]},
    "metrics": {"shadow_token_agreement_per_request": 0.7, "shadow_logprob_gap_per_request": 0.6,
                "shadow_token_agreement": 0.68, "shadow_logprob_gap": 0.65},
}  # fmt: skip


def _verdicts(agreement: float, gap: float, n: int, seed: int = 0) -> tuple[dict[str, str], Any]:
    rng = np.random.default_rng(seed)
    scores = np.column_stack(
        [np.clip(rng.normal(agreement, 0.1, n), 0, 1), np.abs(rng.normal(gap, 0.2, n))]
    )
    reference = load_reference_frame()
    analysis, _ = analyse(
        _frame(scores), model=MODEL, champion="m:p", shadow="m:d", manifest=MANIFEST,
        reference=reference, config=CheckConfig(),
    )  # fmt: skip
    return {c.name: c.outcome for c in analysis.checks}, analysis


def load_reference_frame() -> Any:
    from pruneguard.agent.analysis import Reference

    return Reference(("chars", "tokens"), np.zeros((0, 2), dtype=np.float32), None)


def test_a_window_rated_as_offline_passes_and_a_worse_one_fails_on_the_gap() -> None:
    healthy, analysis = _verdicts(0.7, 0.6, 300)
    assert healthy["logprob_gap"] == PASS and healthy["token_agreement"] == PASS
    assert analysis.agreement == pytest.approx(0.7, abs=0.02)
    worse, _ = _verdicts(0.45, 1.4, 300)
    assert worse["logprob_gap"] == FAIL and worse["token_agreement"] == FAIL
    order = PolicyConfig().gate_order
    checks = _verdicts(0.45, 1.4, 300)[1].checks
    assert verdict(checks, order) == (FAIL, "logprob_gap")
    better, _ = _verdicts(0.9, 0.2, 300)  # one-sided: improving never fails
    assert better["logprob_gap"] == PASS and better["token_agreement"] == PASS


def test_too_few_requests_or_no_offline_value_is_inconclusive() -> None:
    few, _ = _verdicts(0.2, 3.0, 5)
    assert few["logprob_gap"] == INCONCLUSIVE and few["token_agreement"] == INCONCLUSIVE
    bare = {"io": MANIFEST["io"], "metrics": {}}
    analysis, _ = analyse(
        _frame(np.full((300, 2), 0.5)), model=MODEL, champion="m:p", shadow="m:d",
        manifest=bare, reference=load_reference_frame(), config=CheckConfig(),
    )  # fmt: skip
    assert {c.name: c.outcome for c in analysis.checks}["logprob_gap"] == INCONCLUSIVE
