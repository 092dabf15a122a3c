"""A causal-lm champion served on /generate: greedy answers equal to transformers' on the
artifact's ``hf/`` folder, the dense shadow's rating of every answer equal to teacher
forcing in torch, both logged, bad requests refused with a 400 that names the problem,
and a real `pruneguard serve` process that no fuzzed request can make answer 5xx."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_support import Models, Server, fuzz_openapi, wait_for

from pruneguard.deploy.config import ServeConfig
from pruneguard.deploy.metrics import ServingMetrics
from pruneguard.deploy.runtime import Replica
from pruneguard.deploy.validation import ValidationError
from pruneguard.pruning.models.smollm2 import load_causal_lm
from pruneguard.pruning.tasks import causal_lm as lm
from pruneguard.registry.predictions import PredictionLog, read_window

pytestmark = pytest.mark.slow
MODEL = "tiny-llm"
PROMPTS = ["Name a colour.", "What is two plus two?", "Write a short greeting."]


def _replica(models: Models, reg: CollectorRegistry, **overrides: object) -> Replica:
    config = ServeConfig(model=MODEL, home=models.home, log_flush_s=0.05, **overrides)  # type: ignore[arg-type]
    return Replica(
        config,
        registry=models.registry,
        sink=PredictionLog(models.registry.engine),
        metrics=ServingMetrics(reg),
    )


def _window(models: Models, rows: int):  # type: ignore[no-untyped-def]
    def ready():  # type: ignore[no-untyped-def]
        frame = read_window(models.registry.engine, MODEL, since_ts=0)
        return (frame,) if len(frame) == rows else None

    return wait_for(ready)[0]


@pytest.mark.parametrize("shadow_mode", ["process", "thread"])
def test_generated_answers_are_greedy_and_the_shadow_rates_them_as_torch_does(
    decoder_models: Models, decoder_artifacts: tuple, shadow_mode: str
) -> None:
    reg = CollectorRegistry()
    replica = _replica(decoder_models, reg, shadow_mode=shadow_mode, log_text_chars=6)
    replica.start()
    try:
        bodies = [replica.generate(prompt=p, max_new_tokens=8) for p in PROMPTS]
        frame = _window(decoder_models, 2 * len(PROMPTS))
    finally:
        replica.stop()
    dense_dir, pruned_dir = decoder_artifacts
    pruned, tokenizer = load_causal_lm(pruned_dir / "hf")
    dense, _ = load_causal_lm(dense_dir / "hf")
    shadow = frame[frame["variant"] == "shadow"].set_index("request_id")
    champion = frame[frame["variant"] == "champion"].set_index("request_id")
    for prompt, body in zip(PROMPTS, bodies, strict=True):
        assert (
            body["task"] == "causal-lm" and body["model_version"] == decoder_models.champion_version
        )
        (reference,) = lm.answer(pruned, tokenizer, [prompt], max_new_tokens=8)
        assert body["tokens"] == list(reference.tokens)  # genai's greedy = transformers'
        assert body["usage"] == {"prompt_tokens": len(reference.prompt), "completion_tokens": 8}
        assert body["text"] == tokenizer.decode(reference.tokens, skip_special_tokens=True)
        rated = lm.teacher_forced(dense, [reference])  # the dense model in torch
        agreement, gap, count = shadow.loc[body["request_id"], "probabilities"]
        assert count == 8 and agreement == pytest.approx(rated.agreement)
        assert gap == pytest.approx(rated.mean_gap, abs=1e-4)
        logged = champion.loc[body["request_id"], "features"]
        assert logged["text"] == prompt[:6] and logged["answer_tokens"] == 8
        assert logged["tokens"] == len(reference.prompt)
    samples = reg.get_sample_value("pruneguard_shadow_token_agreement_count", {"model": MODEL})
    if shadow_mode == "thread":  # a shadow process keeps its metrics in its own registry
        assert samples == len(PROMPTS)
    tokens = reg.get_sample_value(
        "pruneguard_generated_tokens_total", {"model": MODEL, "variant": "champion"}
    )
    assert tokens == 8 * len(PROMPTS)


@pytest.mark.parametrize(
    ("body", "problem", "message"),
    [
        ({}, "type", 'exactly one of "prompt"'),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "type", "exactly one"),
        ({"prompt": 3}, "dtype", "prompt is a int; send a string"),
        ({"prompt": "   "}, "text_length", "prompt is empty"),
        ({"prompt": "x" * 501}, "text_length", "501 characters, over the limit of 500"),
        ({"prompt": "\ud800"}, "encoding", "not valid UTF-8"),
        ({"prompt": "hi", "max_new_tokens": 17}, "max_new_tokens", "from 1 to 16"),
        ({"prompt": "hi", "max_new_tokens": 0}, "max_new_tokens", "from 1 to 16"),
        ({"prompt": "hi", "max_new_tokens": True}, "max_new_tokens", "max_new_tokens=True"),
        ({"messages": []}, "type", "non-empty JSON array"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "type", "role='robot'"),
        ({"messages": [{"role": "user", "content": 1}]}, "dtype", "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "type", "messages[0] must be"),
    ],
)
def test_bad_generate_requests_are_400s_that_name_the_problem(
    decoder_models: Models, body: dict, problem: str, message: str
) -> None:
    reg = CollectorRegistry()
    replica = _replica(decoder_models, reg, shadow_mode="thread", max_text_chars=500,
                       max_new_tokens=16)  # fmt: skip
    replica.start()
    try:
        with pytest.raises(ValidationError, match=re.escape(message)) as caught:
            replica.generate(**body)
        assert caught.value.problem == problem
        with pytest.raises(ValidationError, match="POST /generate"):
            replica.predict(texts=["a language model takes prompts"])
    finally:
        replica.stop()
    counted = reg.get_sample_value(
        "pruneguard_invalid_requests_total", {"model": MODEL, "problem": problem}
    )
    assert counted == 1


def test_a_served_decoder_generates_over_http_and_fuzzing_gets_no_5xx(
    decoder_models: Models,
) -> None:
    server = Server(decoder_models.home, model=MODEL, extra=("--max-new-tokens", "8"))
    try:
        server.wait_ready(120)
        ok = httpx.post(f"{server.url}/generate", json={"prompt": "Hello there."}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["completion_tokens"] >= 1
        bad = httpx.post(f"{server.url}/generate", json={"prompt": "hi", "max_new_tokens": 9})
        assert bad.status_code == 400 and "from 1 to 8" in bad.json()["error"]
        wrong = httpx.post(f"{server.url}/predict", json={"texts": ["hi"]})
        assert wrong.status_code == 400 and "/generate" in wrong.json()["error"]
        statuses = fuzz_openapi(server.url, max_examples=60)
        assert 400 in statuses and 200 in statuses
        assert server.alive()
    finally:
        server.stop()


def test_the_shadow_scores_what_it_is_sent_and_only_that() -> None:
    """The packed row carries the prompt length: only the answer's tokens are rated."""
    from pruneguard.registry.tasks import pack_sequence, score_sequence, unpack_sequence

    row = pack_sequence([5, 6, 7], [8, 9])
    ids, prompt_tokens = unpack_sequence(row[0])
    assert ids.tolist() == [5, 6, 7, 8, 9] and prompt_tokens == 3
    logprobs = np.log(np.full((5, 12), 1e-3))
    logprobs[2, 8] = 0.0  # position 2 predicts token 8: first choice
    logprobs[3, 1] = 0.0  # position 3 prefers 1 over the answer's 9
    scores = score_sequence(logprobs, ids, prompt_tokens)
    assert scores.agree.tolist() == [True, False]
    assert scores.gap[1] == pytest.approx(-np.log(1e-3))
    with pytest.raises(ValueError, match="cannot have a 7-token prompt"):
        unpack_sequence(np.array([7, 1, 2]))
