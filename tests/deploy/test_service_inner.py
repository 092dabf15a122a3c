"""The BentoML service class in-process (Service.inner()): HTTP status mapping without a server."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from serving_support import MODEL, ROW, Models

if TYPE_CHECKING:
    import bentoml  # imported for real only once BENTOML_HOME is set


@pytest.fixture
def service(models: Models, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PRUNEGUARD_SERVE_MODEL", MODEL)
    monkeypatch.setenv("PRUNEGUARD_HOME", str(models.home))
    from pruneguard.deploy.service import PruneguardService

    instance = cast("bentoml.Service[PruneguardService]", PruneguardService).inner()
    yield instance
    instance.shutdown()


def _ctx(headers: dict[str, str] | None = None) -> Any:
    """What the service reads from BentoML's request context (a real one needs a request)."""
    return SimpleNamespace(
        response=SimpleNamespace(status_code=200), request=SimpleNamespace(headers=headers or {})
    )


def test_predict_and_status_codes(service: Any, models: Models) -> None:
    assert service.__is_ready__()
    ctx = _ctx()
    body = service.predict(inputs=[ROW], ctx=ctx)
    assert body["model_version"] == models.champion_version
    bad_ctx = _ctx()
    body = service.predict(inputs=[[1.0]], ctx=bad_ctx)
    assert bad_ctx.response.status_code == 400 and body["problem"] == "shape"


async def _feedback(service: Any, request_id: str, label: int) -> tuple[int, dict[str, Any]]:
    ctx = _ctx()
    body = await service.feedback(request_id=request_id, label=label, ctx=ctx)
    return ctx.response.status_code, body


def test_feedback_and_admin_status_codes(service: Any) -> None:
    import anyio

    request_id = service.predict(inputs=[ROW], ctx=_ctx())["request_id"]
    assert anyio.run(_feedback, service, request_id, 2) == (
        200,
        {"request_id": request_id, "label": 2, "recorded": True},
    )
    status, body = anyio.run(_feedback, service, request_id, 11)
    assert status == 400 and body["problem"] == "label"

    async def rollback() -> tuple[int, dict[str, Any]]:
        ctx = _ctx({"authorization": "Bearer x"})
        body = await service.admin_rollback(ctx=ctx)
        return ctx.response.status_code, body

    status, body = anyio.run(rollback)
    assert status == 404 and body["error"].startswith("the admin endpoints are off")
