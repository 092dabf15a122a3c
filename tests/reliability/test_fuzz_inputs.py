"""Bad inputs, fuzzed against a real served process: never a 5xx, and the server stays up.

tests/deploy/test_served.py fuzzes from the OpenAPI schema and around the valid
[batch, 1, 8, 8] shape; this adds arbitrary JSON (any shape, NaN/Infinity tokens, integers
of any size), bodies that are not JSON at all, extreme sizes and nesting, and bytes that
are not HTTP. Examples are bounded (hypothesis ``max_examples``), so the run is short.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import ROW, Models, Server, make_models

SETTINGS = settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
ENDPOINTS = ("/predict", "/feedback")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: 10**400 included
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["NaN", "nan", "inf", "-Infinity", "1e309", "0x10", ""]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=80,
)


@st.composite
def shaped(draw: Any) -> Any:
    """Nested lists of a drawn shape around [batch, 1, 8, 8], filled with any scalar."""
    shape = draw(st.lists(st.integers(0, 9), min_size=1, max_size=5))
    fill = draw(st.one_of(scalars, st.floats(-1e6, 1e6)))

    def build(dims: list[int]) -> Any:
        return fill if not dims else [build(dims[1:]) for _ in range(dims[0])]

    return build(shape)


predict_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": json_values}),
    st.fixed_dictionaries({"inputs": shaped()}),
    st.fixed_dictionaries({}, optional={"inputs": shaped(), "extra": json_values}),
)
feedback_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"request_id": st.one_of(st.text(max_size=80), json_values), "label": json_values},
    ),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Models]]:
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(root / "home" / "bentoml"))
        mp.setenv("BENTOML_DO_NOT_TRACK", "True")
        models = make_models(root / "home", root / "artifacts")
    server = Server(root / "home")
    try:
        server.wait_ready()
        yield server, models
    finally:
        server.stop()
        models.registry.close()


def _assert_still_serving(server: Server) -> None:
    assert server.alive(), server.log()
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    reply = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, timeout=30)
    assert reply.status_code == 200, reply.text


def _post(client: httpx.Client, path: str, content: bytes, content_type: str | None) -> int:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=content, headers=headers)
    assert response.status_code < 500, (path, content[:300], response.status_code, response.text)
    return response.status_code


def test_fuzzed_json_bodies_never_get_a_5xx(served: tuple[Server, Models]) -> None:
    server, _ = served
    statuses: set[int] = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:

        @SETTINGS
        @given(
            path_body=st.one_of(
                st.tuples(st.just("/predict"), predict_bodies),
                st.tuples(st.just("/feedback"), feedback_bodies),
            )
        )
        def check(path_body: tuple[str, Any]) -> None:
            path, body = path_body
            content = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity tokens too
            statuses.add(_post(client, path, content, "application/json"))

        check()
    _assert_still_serving(server)
    assert 400 in statuses


def test_fuzzed_non_json_bodies_never_get_a_5xx(served: tuple[Server, Models]) -> None:
    server, _ = served
    statuses: set[int] = set()
    content_types = st.sampled_from(
        [
            None,
            "application/json",
            "text/plain",
            "application/octet-stream",
            "application/x-www-form-urlencoded",
            "multipart/form-data",  # no boundary
            "multipart/form-data; boundary=pg",
            "application/vnd.bentoml+pickle",
            "application/problem+json",  # a JSON type: parsed as JSON
        ]
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:

        @settings(SETTINGS, max_examples=60)
        @given(
            path=st.sampled_from(ENDPOINTS),
            content=st.one_of(st.binary(max_size=400), st.text(max_size=200).map(str.encode)),
            content_type=content_types,
        )
        def check(path: str, content: bytes, content_type: str | None) -> None:
            statuses.add(_post(client, path, content, content_type))

        check()
    _assert_still_serving(server)
    assert statuses and all(400 <= s < 500 for s in statuses)


def _extremes() -> dict[str, bytes]:
    row = json.dumps(ROW).encode()
    return {
        "nested_100k_deep": b"[" * 100_000 + b"]" * 100_000,
        "inputs_nested_5k_deep": b'{"inputs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        "batch_of_5000_rows": b'{"inputs": [' + b",".join([row] * 5_000) + b"]}",
        "flat_million_numbers": b'{"inputs": [' + b",".join([b"1"] * 1_000_000) + b"]}",
        "five_megabyte_string": b'{"inputs": "' + b"x" * 5_000_000 + b'"}',
        "integer_of_5000_digits": b'{"inputs": [[[[' + b"9" * 5_000 + b"]]]]}",
        "float_overflow": b'{"inputs": [[[[1e999, 1, 1, 1, 1, 1, 1, 1]]]]}',
        "invalid_utf8": b'{"inputs": "\xff\xfe\xfd"}',
        "utf16_body": '{"inputs": [1]}'.encode("utf-16"),
        "lone_surrogate": b'{"inputs": "\\ud800"}',
        "empty": b"",
        "whitespace": b" \n\t ",
        "feedback_id_of_100k_chars": b'{"request_id": "' + b"a" * 100_000 + b'", "label": 1}',
        "feedback_label_of_400_digits": b'{"request_id": "r", "label": ' + b"9" * 400 + b"}",
    }


@pytest.mark.parametrize("name", sorted(_extremes()))
def test_extreme_bodies_get_a_4xx(served: tuple[Server, Models], name: str) -> None:
    server, _ = served
    path = "/feedback" if name.startswith("feedback") else "/predict"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        status = _post(client, path, _extremes()[name], "application/json")
    assert 400 <= status < 500, (name, status)
    assert server.alive(), server.log()


def test_bytes_that_are_not_http_leave_the_server_up(served: tuple[Server, Models]) -> None:
    server, _ = served
    for garbage in (
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(64)),  # a TLS hello
        b"GARBAGE / NOT-HTTP\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{",  # short body
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        assert not reply.startswith(b"HTTP/1.1 5"), (garbage, reply[:200])
    _assert_still_serving(server)


MALFORMED_MULTIPART = {
    "no-boundary": ("multipart/form-data", b""),
    "not-multipart": ("multipart/form-data; boundary=pg", b"\x00"),
    "json-sent-as-multipart": ("multipart/form-data; boundary=pg", b'{"inputs": [1]}'),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MULTIPART))
def test_malformed_multipart_is_a_4xx(served: tuple[Server, Models], case: str) -> None:
    """Starlette rejects these with HTTPException(400, "Missing boundary in multipart." /
    "Invalid multipart data."), but BentoML's endpoint wrapper turns any exception raised
    while parsing the request into a 500."""
    server, _ = served
    content_type, body = MALFORMED_MULTIPART[case]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        statuses = {
            path: client.post(
                path, content=body, headers={"content-type": content_type}
            ).status_code
            for path in ENDPOINTS
        }
    assert all(400 <= code < 500 for code in statuses.values()), statuses
    assert server.alive()
