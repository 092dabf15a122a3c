"""A real `pruneguard serve` process (BentoML, SQLite registry) on a loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serving_support import MODEL, ROW, Models, Server, fuzz_openapi, make_models, wait_for

from pruneguard.deploy.metrics import METRIC_NAMES
from pruneguard.registry.predictions import feedback as feedback_table
from pruneguard.registry.predictions import read_window

ADMIN_TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Models]]:
    root = tmp_path_factory.mktemp("served")
    models = make_models(root / "home", root / "artifacts")
    server = Server(
        root / "home",
        extra=("--admin-token-env", "TEST_ADMIN_TOKEN"),
        env={"TEST_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    try:
        server.wait_ready()
        yield server, models
    finally:
        server.stop()
        models.registry.close()


@pytest.fixture
def client(served: tuple[Server, Models]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url, timeout=30) as c:
        yield c


def _rows(n: int, seed: int = 0) -> list[Any]:
    return np.random.default_rng(seed).uniform(0, 16, size=(n, 1, 8, 8)).round(3).tolist()


def test_predict_answers_from_the_champion_with_the_contract(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    one = client.post("/predict", json={"inputs": [ROW]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == MODEL and body["model_version"] == models.champion_version
    assert body["request_id"] == body["request_ids"][0]
    assert len(body["probabilities"]) == 1 and sum(body["probabilities"][0]) == pytest.approx(
        1, abs=1e-5
    )
    assert body["predictions"] == [int(np.argmax(body["probabilities"][0]))]

    batch = client.post("/predict", json={"inputs": _rows(5)}).json()
    assert len(set(batch["request_ids"])) == 5 and "request_id" not in batch
    assert len(batch["predictions"]) == 5 and len(batch["probabilities"]) == 5


def test_champion_and_shadow_rows_reach_the_prediction_log(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    ids = client.post("/predict", json={"inputs": _rows(4, seed=1)}).json()["request_ids"]

    def logged() -> Any:
        frame = read_window(models.registry.engine, MODEL, since_ts=0.0)
        mine = frame[frame.request_id.isin(ids)]
        return (mine,) if len(mine) == 8 else None

    (frame,) = wait_for(logged)
    assert sorted(frame.variant.value_counts().items()) == [("champion", 4), ("shadow", 4)]
    versions = dict(zip(frame.variant, frame.version, strict=False))
    assert versions == {"champion": models.champion_version, "shadow": models.shadow_version}
    assert all(len(f) == 64 for f in frame.features)


def test_feedback_is_in_the_database_when_acknowledged(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    request_id = client.post("/predict", json={"inputs": [ROW]}).json()["request_id"]
    response = client.post("/feedback", json={"request_id": request_id, "label": 7})
    assert response.status_code == 200, response.text
    with models.registry.engine.connect() as conn:  # no waiting: a 200 means committed
        label = (
            conn.execute(feedback_table.select().where(feedback_table.c.request_id == request_id))
            .one()
            .label
        )
    assert label == 7


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": [[[1.0, 2.0]]]}, "expected [batch, 1, 8, 8]"),
        ({"inputs": [[[["x"] * 8] * 8]]}, "strings"),
        ({"inputs": [[[[1e39] * 8] * 8]]}, "NaN or inf"),
        ({"inputs": [ROW] * 65}, "exceeds the limit of 64"),
        ({"inputs": []}, "empty"),
        ({"inputs": "abc"}, "inputs"),
        ({"input": [ROW]}, "inputs"),
        ({"inputs": [[[[None] * 8] * 8]]}, "non-numeric"),
        ([1, 2, 3], "Input"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(client: httpx.Client, body: Any, words: str) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 400, response.text
    assert words in response.text


def test_bad_feedback_is_a_400(client: httpx.Client) -> None:
    for body in (
        {"request_id": "r1", "label": 10},
        {"request_id": "", "label": 1},
        {"request_id": "r1"},
        {"label": 1},
    ):
        response = client.post("/feedback", json=body)
        assert response.status_code == 400, (body, response.text)


def test_admin_endpoints_need_the_bearer_token(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        response = client.post("/admin/rollback", json={}, headers=headers)
        assert response.status_code == 401, response.text
        assert "Bearer" in response.json()["error"]


def test_admin_promote_and_rollback_switch_this_replica_at_once(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    promoted = client.post(
        "/admin/promote", json={"tag": models.shadow, "reason": "canary"}, headers=auth
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["event"]["actor"] == "admin-api"
    assert promoted.json()["status"]["champion"] == models.shadow  # swapped before answering
    assert (
        client.post("/predict", json={"inputs": [ROW]}).json()["model_version"]
        == models.shadow_version
    )
    unknown = client.post("/admin/promote", json={"tag": f"{MODEL}:doesnotexist"}, headers=auth)
    assert unknown.status_code == 404, unknown.text
    back = client.post("/admin/rollback", json={"reason": "undo canary"}, headers=auth)
    assert back.status_code == 200, back.text
    assert (
        client.post("/predict", json={"inputs": [ROW]}).json()["model_version"]
        == models.champion_version
    )
    last = models.registry.history(MODEL, limit=1)[0]
    assert (last.actor, last.action, last.reason) == ("admin-api", "rollback", "undo canary")


def test_metrics_show_every_pruneguard_family(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    client.post("/predict", json={"inputs": _rows(3, seed=2)})
    client.post("/predict", json={"inputs": [[[1.0]]]})  # one invalid request

    def exposed() -> str | None:
        text = client.get("/metrics").text
        return text if all(name in text for name in METRIC_NAMES) else None

    text = wait_for(exposed)
    assert "bentoml_service_request_total" in text  # next to BentoML's own
    info = f'pruneguard_model_info{{kind="pruned",model="{MODEL}",variant="champion",version="{models.champion_version}"}} 1.0'
    assert info in text


def test_alias_moves_switch_model_version_without_failed_requests(
    served: tuple[Server, Models],
) -> None:
    server, models = served
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json={"inputs": [ROW]})
                seen.append((r.status_code, r.json().get("model_version", "")))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: seen)
        models.registry.promote(models.shadow, actor="test", reason="flip")
        wait_for(lambda: seen and seen[-1][1] == models.shadow_version)
        models.registry.rollback(MODEL, actor="test", reason="flip back")
        wait_for(lambda: seen[-1][1] == models.champion_version)
    finally:
        stop.set()
        thread.join()
    assert {code for code, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert versions[0] == models.champion_version and models.shadow_version in versions


def test_openapi_fuzz_never_gets_a_5xx(served: tuple[Server, Models]) -> None:
    """Requests generated by schemathesis from /docs.json, valid and invalid per the schema."""
    server, _ = served
    statuses = fuzz_openapi(server.url, max_examples=60)
    assert server.alive() and httpx.get(f"{server.url}/readyz").status_code == 200
    assert 400 in statuses


def _near_valid_inputs() -> Any:
    """A batch shaped like (or close to) [batch, 1, 8, 8], maybe with one poisoned value."""
    from hypothesis import strategies as st

    poison = st.one_of(
        st.just(float("nan")),
        st.just(float("inf")),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
        st.lists(st.floats(-1, 1), max_size=2),
    )
    shapes = st.sampled_from(
        [(1, 1, 8, 8), (3, 1, 8, 8), (0, 1, 8, 8), (1, 2, 8, 8), (1, 1, 7, 8), (2, 1, 8, 9)]
    )

    @st.composite
    def batch(draw: Any) -> Any:
        shape = draw(shapes)
        n = int(np.prod(shape))
        values = draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n))
        array = np.asarray(values, dtype=object).reshape(shape)
        if n and draw(st.booleans()):
            index = tuple(draw(st.integers(0, dim - 1)) for dim in shape)
            array[index] = draw(poison)
        return array.tolist()

    return batch()


def test_near_valid_inputs_get_200_or_400_and_the_server_stays_up(
    served: tuple[Server, Models],
) -> None:
    """Hypothesis-built batches around the [batch, 1, 8, 8] shape, with NaN, inf, huge ints,
    booleans, nulls and strings mixed in (sent as lenient JSON, NaN tokens included)."""
    import json

    from hypothesis import HealthCheck, given, settings

    server, _ = served
    statuses: set[int] = set()
    with httpx.Client(base_url=server.url, timeout=30) as c:

        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(inputs=_near_valid_inputs())
        def check(inputs: Any) -> None:
            body = json.dumps({"inputs": inputs}, allow_nan=True)
            response = c.post(
                "/predict", content=body, headers={"content-type": "application/json"}
            )
            statuses.add(response.status_code)
            assert response.status_code in (200, 400), response.text

        check()
    assert server.alive()
    assert statuses == {200, 400}


@pytest.mark.parametrize(
    "label",
    ["3", True, False, 3.0, -1, 10, None, [3], {"label": 3}, "three"],
    ids=repr,
)
def test_feedback_label_must_be_a_json_integer_class(client: httpx.Client, label: Any) -> None:
    """No coercion: "3" and true are not the label 3 (or 1); 10 is outside the 10 classes."""
    response = client.post("/feedback", json={"request_id": "strict-1", "label": label})
    assert response.status_code == 400, (label, response.text)
    body = response.json()
    assert body["problem"] == "label" and "label" in body["error"], body


def test_feedback_request_id_must_be_a_string(client: httpx.Client) -> None:
    response = client.post("/feedback", json={"request_id": 12345, "label": 3})
    assert response.status_code == 400, response.text
    assert response.json()["problem"] == "request_id"


def test_feedback_accepts_an_integer_label_in_range(
    served: tuple[Server, Models], client: httpx.Client
) -> None:
    _, models = served
    response = client.post("/feedback", json={"request_id": "strict-ok", "label": 9})
    assert response.status_code == 200, response.text
    with models.registry.engine.connect() as conn:
        row = conn.execute(
            feedback_table.select().where(feedback_table.c.request_id == "strict-ok")
        ).one()
    assert row.label == 9 and isinstance(row.label, int)


NOT_JSON = {
    "multipart-no-boundary": ("multipart/form-data", b""),
    "multipart-garbage": ("multipart/form-data; boundary=pg", b"\x00"),
    "form-urlencoded": ("application/x-www-form-urlencoded", b"inputs=1"),
    "text-plain-json-body": ("text/plain", b'{"request_id": "r1", "label": 1}'),
    "pickle": ("application/vnd.bentoml+pickle", b"\x80\x04N."),
}


def _invalid(server: Server, problem: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "pruneguard_invalid_requests_total" and s.labels.get("problem") == problem
    )


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_a_body_not_sent_as_json_is_a_415_naming_the_fix(
    served: tuple[Server, Models], client: httpx.Client, case: str
) -> None:
    server, _ = served
    content_type, body = NOT_JSON[case]
    before = _invalid(server, "content_type")
    for path in ("/predict", "/feedback"):
        response = client.post(path, content=body, headers={"content-type": content_type})
        assert response.status_code == 415, (path, response.text)
        assert "send Content-Type: application/json" in response.json()["error"]
        assert response.json()["problem"] == "content_type"
    assert _invalid(server, "content_type") == before + 2
    assert server.alive()


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8"])
def test_json_with_parameters_or_without_a_content_type_is_served(
    client: httpx.Client, content_type: str | None
) -> None:
    import json

    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=json.dumps({"inputs": [ROW]}), headers=headers)
    assert response.status_code == 200, response.text


def test_a_rejected_body_is_logged_as_one_info_line(served: tuple[Server, Models]) -> None:
    """BentoML logs the pydantic error of a body it answers 400 at ERROR with a traceback;
    the service turns that into one INFO line."""
    server, _ = served
    marker = "quiet-marker-7f3a"
    for path, body in (("/predict", {"inputs": marker}), ("/feedback", {"request_id": marker})):
        response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
        assert response.status_code == 400, response.text

    def marked() -> list[str]:
        return [ln for ln in server.log_path.read_text().splitlines() if marker in ln]

    wait_for(lambda: len(marked()) == 2)
    assert all("[INFO]" in ln and "-> 400" in ln for ln in marked()), marked()
    full = server.log_path.read_text()
    assert "Traceback" not in full and "[ERROR]" not in full, full[-5000:]
