"""Texts in, embeddings out: a text model's artifact (tokenizer inside) served by a Replica
and by a real `pruneguard serve` process, its shadow compared by cosine, its texts logged
within bounds, and bad texts refused with a 400 that names the problem."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_support import Models, Server, wait_for

from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.model import LoadedModel
from pruneguard.deploy.runtime import Replica
from pruneguard.deploy.validation import ValidationError
from pruneguard.registry.artifact import verify
from pruneguard.registry.predictions import PredictionLog, read_window

TEXTS = ["The cat sat on the mat.", "A dog runs in the park.", "Prices rose sharply today."]


def _replica(models: Models, reg: CollectorRegistry, **overrides: object) -> Replica:
    config = ServeConfig(model="texts", home=models.home, log_flush_s=0.05, **overrides)  # type: ignore[arg-type]
    return Replica(
        config,
        registry=models.registry,
        sink=PredictionLog(models.registry.engine),
        metrics=ServingMetrics(reg),
    )


def test_artifact_carries_its_tokenizer_with_sha256(text_artifacts: tuple) -> None:
    dense, pruned = text_artifacts
    manifest = verify(pruned)
    assert manifest["io"]["task"] == "embedding"
    assert manifest["io"]["text"]["tokenizer"] == "tokenizer/tokenizer.json"
    assert "tokenizer/tokenizer.json" in manifest["files"]
    (pruned / "tokenizer" / "tokenizer.json").write_text("{}")  # tampering is caught
    try:
        with pytest.raises(Exception, match="sha256"):
            verify(pruned)
    finally:  # the session fixture is shared: put the file back from the dense artifact
        (pruned / "tokenizer" / "tokenizer.json").write_bytes(
            (dense / "tokenizer" / "tokenizer.json").read_bytes()
        )
    assert verify(pruned) == manifest


def test_loaded_text_model_matches_the_pipeline_tokenization(text_artifacts: tuple) -> None:
    from pruneguard.pruning.text import load_encoder, tokenize

    dense, _ = text_artifacts
    model = LoadedModel.load(dense, tag="texts:dense")
    batch, _ = model.encode(TEXTS)
    _, tokenizer = load_encoder(next(dense.parent.parent.glob("hf-*")))
    expected = tokenize(tokenizer, TEXTS, max_length=model.text.max_length)  # type: ignore[union-attr]
    for i, name in enumerate(model.text.input_names):  # type: ignore[union-attr]
        np.testing.assert_array_equal(batch[:, i], expected[name].numpy())
    out = model.predict(batch)
    assert out.outputs.shape[0] == 3 and (out.classes == -1).all()
    np.testing.assert_allclose(np.linalg.norm(out.outputs, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("shadow_mode", ["process", "thread"])
def test_texts_answered_with_embeddings_and_compared_by_cosine(
    text_models: Models, shadow_mode: str
) -> None:
    reg = CollectorRegistry()
    replica = _replica(text_models, reg, shadow_mode=shadow_mode, log_text_chars=8)
    replica.start()
    try:
        body = replica.predict(texts=TEXTS)
        frame = wait_for(
            lambda: (f,) if len(f := read_window(text_models.registry.engine, "texts", since_ts=0)) == 6 else None
        )[0]  # fmt: skip
    finally:
        replica.stop()
    assert body["task"] == "embedding" and len(body["embeddings"]) == 3
    assert "predictions" not in body and "probabilities" not in body
    champion = frame[frame.variant == "champion"].set_index("request_id")
    row = champion.loc[body["request_ids"][0]]
    assert row.features["text"] == TEXTS[0][:8] and row.features["chars"] == len(TEXTS[0])
    assert row.features["tokens"] > 2 and row.features["truncated"] is False
    np.testing.assert_allclose(row.probabilities, body["embeddings"][0], rtol=1e-5)
    shadow = frame[frame.variant == "shadow"].set_index("request_id")
    cosine = np.dot(row.probabilities, shadow.loc[body["request_ids"][0]].probabilities)
    assert -1.0 <= cosine <= 1.0 + 1e-6
    if shadow_mode == "thread":  # the sidecar process exports to the multiprocess directory
        cosines = reg.get_sample_value("pruneguard_shadow_cosine_count", {"model": "texts"})
        assert cosines == 3
        total = sum(
            reg.get_sample_value(
                "pruneguard_shadow_comparisons_total", {"model": "texts", "outcome": outcome}
            )
            for outcome in ("agree", "disagree")
        )
        assert total == 3


def test_text_logging_can_be_switched_off(text_models: Models) -> None:
    replica = _replica(text_models, CollectorRegistry(), shadow_mode="thread", log_text_chars=0)
    replica.start()
    try:
        replica.predict(texts=TEXTS[:1])
        frame = wait_for(
            lambda: (f,) if len(f := read_window(text_models.registry.engine, "texts", since_ts=0)) == 2 else None
        )[0]  # fmt: skip
    finally:
        replica.stop()
    features = frame[frame.variant == "champion"].features.iloc[0]
    assert "text" not in features and features["chars"] == len(TEXTS[0])


@pytest.mark.parametrize(
    ("texts", "problem", "words"),
    [
        ([], "batch_size", "empty"),
        (["ok", 3], "dtype", r"texts\[1\] is a int"),
        (["x" * 51], "text_length", "over the limit of 50"),
        (["bad \ud800 text"], "encoding", "UTF-8"),
        (["t"] * 65, "batch_size", "limit of 64"),
        ("not a list", "type", "JSON array"),
    ],
)
def test_bad_texts_name_the_problem(
    text_models: Models, texts: object, problem: str, words: str
) -> None:
    reg = CollectorRegistry()
    replica = _replica(text_models, reg, shadow_mode="thread", max_text_chars=50)
    replica.start()
    try:
        with pytest.raises(ValidationError, match=words) as caught:
            replica.predict(texts=texts)
        assert caught.value.problem == problem
        with pytest.raises(ValidationError, match="is a text model"):
            replica.predict(inputs=[[1, 2, 3]])  # a text model takes texts
        with pytest.raises(ValidationError, match="no class"):
            replica.feedback("abc", 1)
    finally:
        replica.stop()
    count = reg.get_sample_value(
        "pruneguard_invalid_requests_total", {"model": "texts", "problem": problem}
    )
    assert count == 1 + (problem == "type")  # inputs sent to a text model count as "type"


@pytest.mark.slow  # a real served process (~10 s)
def test_served_text_model_answers_texts_and_refuses_bad_ones(text_models: Models) -> None:
    server = Server(text_models.home, model="texts")
    try:
        server.wait_ready()
        ok = httpx.post(f"{server.url}/predict", json={"texts": TEXTS}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["embeddings"]) == 3
        for body in ({"texts": []}, {"texts": [1]}, {"inputs": [[1.0]]}, {}, {"texts": "x"}):
            bad = httpx.post(f"{server.url}/predict", json=body, timeout=30)
            assert bad.status_code == 400, (body, bad.text)
        raw = b'{"texts": ["caf\xe9"]}'  # Latin-1 bytes: not UTF-8
        bad = httpx.post(
            f"{server.url}/predict", content=raw,
            headers={"Content-Type": "application/json"}, timeout=30,
        )  # fmt: skip
        assert bad.status_code == 400, bad.text
    finally:
        server.stop()
