"""The HTTP boundary in front of BentoML's endpoint code: the content-type rule and quiet
logging of client errors.

- :class:`JsonOnly` (an ASGI middleware) answers 415 to a request on a JSON endpoint whose
  ``Content-Type`` is not JSON. BentoML would otherwise pick its form/multipart parser for
  ``multipart/form-data`` and ``application/x-www-form-urlencoded``, whose parse errors
  (a missing boundary, a body that is not multipart) its endpoint wrapper turns into a 500.
- :class:`ClientErrorLogFilter` turns BentoML's ERROR-with-traceback record for a request it
  answers with a 4xx (e.g. a body pydantic rejects) into one INFO line.

Nothing here imports BentoML; :mod:`deploy.service` mounts both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

__all__ = ["ClientErrorLogFilter", "JsonOnly", "is_json_media_type"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json`` (parameters ignored); a missing or
    empty header counts as JSON, which is what BentoML assumes for it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonOnly:
    """415 for a non-JSON ``Content-Type`` on ``paths``; everything else passes through.

    ``on_reject(path, media_type)`` is called for each refused request (a metric counter).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: Collection[str],
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type")
        if is_json_media_type(content_type):
            await self.app(scope, receive, send)
            return
        media = (content_type or "").split(";", 1)[0].strip()[:100]
        if self.on_reject is not None:
            self.on_reject(str(scope["path"]), media)
        body = {
            "error": f"Content-Type {media!r} is not accepted on {scope['path']}; "
            "send Content-Type: application/json with a JSON body",
            "problem": "content_type",
        }
        await _send_json(send, 415, body)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ClientErrorLogFilter(logging.Filter):
    """Rewrite a record logged with an exception that the server answers with a 4xx into
    one INFO line without a traceback (the client sent something wrong; the server is fine).

    ``status_of(exc)`` gives the status an exception is answered with, or None when the
    record is to be left alone.
    """

    def __init__(self, status_of: Callable[[BaseException], int | None]) -> None:
        super().__init__()
        self.status_of = status_of

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = self.status_of(exc) if exc is not None else None
        if exc is None or status is None or not 400 <= status < 500:
            return True
        message = record.getMessage()
        detail = " ".join(str(exc).split())[:300]  # one line, bounded
        record.msg = "%s -> %d (%s: %s)"
        record.args = (message, status, type(exc).__name__, detail)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True
