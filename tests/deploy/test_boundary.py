"""The HTTP boundary pieces without a server: the content-type rule, the client-error log
filter and the private Prometheus directory of a `pruneguard serve` process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from pruneguard.deploy.boundary import ClientErrorLogFilter, JsonOnly, is_json_media_type
from pruneguard.deploy.launch import PREFIX, private_metrics_dir, remove_stale


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
        ("application/vnd.bentoml+pickle", False),
        ("application/jsonx", False),
    ],
)
def test_json_media_types(content_type: str | None, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"got": (await request.body()).decode()})


def _app(rejected: list[tuple[str, str]]) -> Starlette:
    app = Starlette(routes=[Route(p, _echo, methods=["POST"]) for p in ("/predict", "/other")])
    app.add_middleware(JsonOnly, paths=("/predict",), on_reject=lambda *args: rejected.append(args))
    return app


def test_json_only_answers_415_on_its_paths_and_passes_the_rest() -> None:
    rejected: list[tuple[str, str]] = []
    with TestClient(_app(rejected)) as client:
        refused = client.post(
            "/predict", content=b"x", headers={"content-type": "multipart/form-data"}
        )
        served = client.post("/predict", json={"a": 1})
        elsewhere = client.post("/other", content=b"x", headers={"content-type": "text/plain"})
    assert refused.status_code == 415
    assert refused.json()["problem"] == "content_type"
    assert "send Content-Type: application/json" in refused.json()["error"]
    assert served.status_code == 200 and served.json() == {"got": '{"a":1}'}
    assert elsewhere.status_code == 200
    assert rejected == [("/predict", "multipart/form-data")]


class _ClientMistake(Exception):
    pass


def _status_of(exc: BaseException) -> int | None:
    return 400 if isinstance(exc, _ClientMistake) else None


def _log_failure(logger: logging.Logger, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        logger.error("Exception on %s [%s]", "/predict", "POST", exc_info=True)


def test_a_client_error_is_logged_as_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("pruneguard.test.boundary")
    log_filter = ClientErrorLogFilter(_status_of)
    logger.addFilter(log_filter)
    try:
        with caplog.at_level(logging.DEBUG, logger=logger.name):
            _log_failure(logger, _ClientMistake("1 validation error\nlabel\n  Field required"))
            _log_failure(logger, RuntimeError("a real bug"))
    finally:
        logger.removeFilter(log_filter)
    quiet, loud = caplog.records
    assert quiet.levelno == logging.INFO and quiet.exc_info is None
    assert quiet.getMessage() == (
        "Exception on /predict [POST] -> 400 "
        "(_ClientMistake: 1 validation error label Field required)"
    )
    assert caplog.text.count("Traceback") == 1  # the real bug only
    assert loud.levelno == logging.ERROR and loud.exc_info is not None


def test_metrics_dirs_are_private_and_stale_ones_are_removed(tmp_path: Path) -> None:
    mine = private_metrics_dir(tmp_path)
    assert mine.name.startswith(f"{PREFIX}{os.getpid()}-") and not any(mine.iterdir())
    assert private_metrics_dir(tmp_path) != mine
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"{PREFIX}{int(dead.stdout)}-abc"
    (stale / "sub").mkdir(parents=True)
    unrelated = tmp_path / "other-dir"
    unrelated.mkdir()
    assert remove_stale(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and unrelated.exists()
