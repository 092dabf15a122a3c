"""A served text model fuzzed: never a 5xx, and the server keeps answering texts.

A real `pruneguard serve` process with a pruned random-weight BERT encoder as champion and its
dense parent as shadow. Requests come from the service's own OpenAPI schema (schemathesis,
valid and invalid per the schema), from arbitrary text (any Unicode, lone surrogates as JSON
escapes, control characters), from bodies near the limits (64 texts, 10,000 characters) and
past them, and from bytes that are not UTF-8. Examples are bounded (``max_examples``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import Server, fuzz_openapi

SETTINGS = settings(
    max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
MAX_TEXTS, MAX_CHARS = 64, 10_000  # the service's defaults (ServeConfig)

texts = st.text(max_size=60) | st.text(
    alphabet=st.characters(codec=None, categories=None), min_size=1, max_size=40
)
odd_items = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.text(), max_size=2),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from hf_models import make_text_artifacts

    from pruneguard.registry import open_registry

    root = tmp_path_factory.mktemp("fuzz-text")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(home / "bentoml"))
        mp.setenv("BENTOML_DO_NOT_TRACK", "True")
        dense, pruned = make_text_artifacts(root / "artifacts")
        registry = open_registry(None, home=home)
        champion = registry.register(pruned, actor="test").tag
        shadow = registry.register(dense, actor="test").tag
    registry.set_alias("texts", "champion", champion, actor="test")
    registry.set_alias("texts", "shadow", shadow, actor="test")
    served = Server(home, model="texts")
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()
        registry.close()


def _post(client: httpx.Client, body: bytes) -> httpx.Response:
    reply = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert reply.status_code < 500, (body[:300], reply.status_code, reply.text)
    return reply


def _still_serving(server: Server) -> None:
    assert server.alive(), server.log()
    reply = httpx.post(f"{server.url}/predict", json={"texts": ["still here"]}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["embeddings"]) == 1


def test_openapi_generated_requests_never_get_a_5xx(server: Server) -> None:
    statuses = fuzz_openapi(server.url, max_examples=80)
    _still_serving(server)
    assert 400 in statuses


def test_any_unicode_text_is_answered_and_anything_else_named(server: Server) -> None:
    answered, refused = [], []
    with httpx.Client(base_url=server.url, timeout=30) as client:

        @SETTINGS
        @given(
            batch=st.lists(texts, max_size=MAX_TEXTS + 3),
            poison=st.one_of(st.none(), odd_items),
        )
        def check(batch: list[str], poison: Any) -> None:
            body: list[Any] = list(batch) + ([] if poison is None else [poison])
            # json.dumps escapes lone surrogates as \\udXXX: valid JSON, not valid UTF-8 text
            reply = _post(client, json.dumps({"texts": body}).encode())
            lone = any(0xD800 <= ord(c) <= 0xDFFF for t in batch for c in t)
            if batch and len(body) <= MAX_TEXTS and poison is None and not lone:
                assert reply.status_code == 200, (body, reply.text)
                assert len(reply.json()["embeddings"]) == len(batch)
                answered.append(len(batch))
            else:
                assert reply.status_code == 400, (body, reply.text)
                assert reply.json(), reply.text  # a message that names the problem
                refused.append(reply.json())

        check()
    _still_serving(server)
    assert answered and refused


EXTREMES = {
    "at_the_limits": (json.dumps({"texts": ["a " * (MAX_CHARS // 2)] * MAX_TEXTS}), 200),
    "one_text_too_many": (json.dumps({"texts": ["x"] * (MAX_TEXTS + 1)}), 400),
    "one_char_too_long": (json.dumps({"texts": ["x" * (MAX_CHARS + 1)]}), 400),
    "a_megabyte_text": (json.dumps({"texts": ["y" * 1_000_000]}), 400),
    "lone_surrogate": ('{"texts": ["\\ud800 tail"]}', 400),
    "nul_and_controls": (json.dumps({"texts": ["\x00\x01\x1b[31m\u202e"]}), 200),
    "texts_and_inputs": (json.dumps({"texts": ["a"], "inputs": [[1.0]]}), 400),
    "texts_as_object": (json.dumps({"texts": {"0": "a"}}), 400),
    "texts_nested_deep": ('{"texts": ' + "[" * 5_000 + "]" * 5_000 + "}", 400),
}


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_bodies_at_and_past_the_limits(server: Server, name: str) -> None:
    body, expected = EXTREMES[name]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        reply = _post(client, body.encode())
    assert reply.status_code == expected, (name, reply.text[:300])
    assert server.alive(), server.log()


def test_bytes_that_are_not_utf8_are_a_400(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for raw in (b'{"texts": ["caf\xe9"]}', b'{"texts": ["\xff\xfe"]}', "{}".encode("utf-16")):
            assert _post(client, raw).status_code == 400, raw
    _still_serving(server)
