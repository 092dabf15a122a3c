"""The BentoML service: ``POST /predict``, ``POST /generate`` (a causal-lm champion),
``POST /feedback`` (+ optional admin endpoints),
with BentoML's own ``/readyz``, ``/livez``, ``/metrics`` and ``/docs.json``.

Nothing is pinned at ``bentoml build`` time: each worker resolves the champion and shadow
aliases from the registry named by its environment (see :mod:`deploy.config`) when it
starts, and follows them while it runs (:mod:`deploy.swap`).

Status codes: 400 for a request that does not match the model (the body names the
problem), 415 for a body that is not sent as ``application/json``
(:class:`deploy.boundary.JsonOnly`), 503 while no champion is loaded or the database is
unreachable; a 5xx is never the answer to bad input, and a 4xx is logged as one INFO line
(:class:`deploy.boundary.ClientErrorLogFilter`), not as an ERROR with a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, cast

import bentoml

from pruneguard.deploy.admin import AdminAPI, AdminDenied
from pruneguard.deploy.boundary import ClientErrorLogFilter, JsonOnly
from pruneguard.deploy.config import ENV, ServeConfig
from pruneguard.deploy.runtime import NotReady, Replica
from pruneguard.deploy.validation import ValidationError
from pruneguard.registry.errors import ConfigError, Conflict, NotFound, PruneguardError, Unavailable

__all__ = ["PruneguardService"]

log = logging.getLogger(__name__)

# Decided when BentoML imports this module (before any worker exists): the worker count.
_WORKERS = int(os.environ.get("PRUNEGUARD_SERVE_WORKERS") or 1)

# The routes that take a JSON body (BentoML's /readyz, /livez, /metrics are not ours).
JSON_ROUTES = ("/predict", "/generate", "/feedback", "/status", "/admin/promote", "/admin/rollback")
# BentoML logs an exception raised while handling a request on this logger.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"

# Each error class -> HTTP status; the most specific class listed first wins.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ValidationError, 400),
    (AdminDenied, 401),
    (NotFound, 404),
    (Conflict, 409),
    (ConfigError, 400),
    (NotReady, 503),
    (Unavailable, 503),
    (PruneguardError, 422),
)


def _error(ctx: bentoml.Context, exc: Exception) -> dict[str, Any]:
    status = next(code for cls, code in _STATUS if isinstance(exc, cls))
    ctx.response.status_code = status
    body: dict[str, Any] = {"error": str(exc)}
    problem = getattr(exc, "problem", None)
    if problem is not None:
        body["problem"] = problem
    return body


def _bentoml_status(exc: BaseException) -> int | None:
    """The status BentoML's endpoint wrapper answers ``exc`` with (None: not one it maps)."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError as BodyError

    if isinstance(exc, BodyError):
        return 400
    if isinstance(exc, BentoMLException):
        return int(exc.error_code)
    return None


def quiet_client_errors() -> None:
    """Log a request BentoML answers with a 4xx as one INFO line (idempotent)."""
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter(_bentoml_status))


def _count_rejected(path: str, media_type: str) -> None:
    from pruneguard.deploy.metrics import default_metrics

    model = os.environ.get(ENV["model"], "")
    default_metrics().invalid_requests.labels(model, "content_type").inc()
    log.info("refused %s with Content-Type %r -> 415", path, media_type)


async def _off_loop(
    ctx: bentoml.Context, func: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """Run a blocking registry/database call in a worker thread; map errors to statuses."""
    import anyio.to_thread

    try:
        return await anyio.to_thread.run_sync(func, *args)
    except PruneguardError as exc:
        return _error(ctx, exc)


@bentoml.service(name="pruneguard", workers=_WORKERS, traffic={"timeout": 30})
class PruneguardService:
    """Champion answers; the shadow compares; both are logged; aliases are followed live."""

    def __init__(self) -> None:
        # The shadow and prediction-log threads share this process's GIL with the request
        # threads: a 1 ms switch interval (default 5 ms) bounds how long a request waits
        # behind them.
        sys.setswitchinterval(0.001)
        quiet_client_errors()
        self.config = ServeConfig.from_env()
        self.replica = Replica.open(self.config)
        self.admin = AdminAPI(self.replica)
        self.replica.start()

    def __is_ready__(self) -> bool:
        return self.replica.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.replica.stop()

    @bentoml.api(route="/predict")
    def predict(
        self,
        ctx: bentoml.Context,
        inputs: list[Any] | None = None,
        texts: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Answer with the champion: ``inputs`` (a batch of rows shaped as the model's io
        spec) for a tensor model, ``texts`` (a list of strings) for a text model. The answer
        follows the model's task: classes and probabilities, or embeddings."""
        try:
            return self.replica.predict(inputs, texts)
        except PruneguardError as exc:
            return _error(ctx, exc)

    @bentoml.api(route="/generate")
    def generate(
        self,
        ctx: bentoml.Context,
        prompt: Any = None,
        messages: Any = None,
        max_new_tokens: Any = None,
    ) -> dict[str, Any]:
        """Answer with a causal-lm champion, greedily: ``prompt`` (a string, one user turn)
        or ``messages`` (chat turns of ``role`` and ``content``), at most ``max_new_tokens``
        (the server's limit, PRUNEGUARD_MAX_NEW_TOKENS). The dense shadow rates the answer's
        tokens off the response path."""
        # Typed Any so that pydantic coerces nothing: deploy.generation names the problem.
        try:
            return self.replica.generate(prompt, messages, max_new_tokens)
        except PruneguardError as exc:
            return _error(ctx, exc)

    @bentoml.api(route="/feedback")
    async def feedback(self, request_id: Any, label: Any, ctx: bentoml.Context) -> dict[str, Any]:
        """Record the true class of an earlier request; 200 only once it is in the database."""
        # Typed Any so that pydantic coerces nothing ("3" or true is not the label 3):
        # deploy.validation.validate_feedback is strict and names the problem.
        # A database write may wait on a lock: keep it off the /predict thread pool.
        return await _off_loop(ctx, self.replica.feedback, request_id, label)

    @bentoml.api(route="/status")
    def status(self) -> dict[str, Any]:
        """The versions this worker serves and the registry revision it has seen."""
        return self.replica.status()

    @bentoml.api(route="/admin/promote")
    async def admin_promote(
        self, tag: str, ctx: bentoml.Context, reason: str = "", shadow_previous: bool = False
    ) -> dict[str, Any]:
        """Make ``tag`` the champion (needs ``Authorization: Bearer <admin token>``)."""
        try:
            self.admin.authorize(ctx.request.headers.get("authorization"))
        except PruneguardError as exc:
            return _error(ctx, exc)
        return await _off_loop(ctx, self.admin.promote, tag, reason, shadow_previous)

    @bentoml.api(route="/admin/rollback")
    async def admin_rollback(
        self, ctx: bentoml.Context, reason: str = "", to: str | None = None
    ) -> dict[str, Any]:
        """Move the champion back (needs ``Authorization: Bearer <admin token>``)."""
        try:
            self.admin.authorize(ctx.request.headers.get("authorization"))
        except PruneguardError as exc:
            return _error(ctx, exc)
        return await _off_loop(ctx, self.admin.rollback, reason, to)


# @bentoml.service returns a bentoml.Service at run time; its type stub keeps the class.
_SERVICE = cast("bentoml.Service[PruneguardService]", PruneguardService)
_SERVICE.add_asgi_middleware(JsonOnly, paths=JSON_ROUTES, on_reject=_count_rejected)
quiet_client_errors()
