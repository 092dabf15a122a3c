"""The agent's HTTP endpoints (127.0.0.1 by default):

- ``GET /metrics``                       Prometheus exposition of :class:`AgentMetrics`
- ``GET /healthz``                       ``{"status": "ok", "models": {model: phase}}``
- ``GET /reports/latest/<model>``        the latest report's HTML (``.json``: its JSON;
  ``/reports/latest/<model>/<file>.html``: its other pages, e.g. ``quality-champion.html``)
- ``POST /alerts``                       Alertmanager webhook: each firing alert with a
  ``model`` label asks for a rollback (trigger ``alert``). Off (404) unless a token is set;
  requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneguard.agent.reports import HTML_NAME, JSON_NAME, latest_report
from pruneguard.registry.errors import ConfigError

if TYPE_CHECKING:
    from pruneguard.agent.loop import Agent

__all__ = ["AgentServer", "parse_alerts"]

log = logging.getLogger("pruneguard.agent.server")
MAX_BODY = 1 << 20
_REPORT = re.compile(
    r"^/reports/latest/([A-Za-z0-9][A-Za-z0-9._-]*?)(\.json)?(?:/([\w.-]+\.html))?$"
)


def parse_alerts(payload: Any) -> list[tuple[str, str]]:
    """(model, reason) for each firing alert of an Alertmanager webhook payload."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ConfigError('webhook body must be Alertmanager JSON: {"alerts": [...]}')
    found = []
    for alert in payload["alerts"]:
        labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
        if alert.get("status", "firing") != "firing" or "model" not in labels:
            continue
        found.append((str(labels["model"]), str(labels.get("alertname", "alert"))))
    return found


class AgentServer:
    """Serves an :class:`Agent` over HTTP in a background thread."""

    def __init__(
        self, agent: Agent, *, host: str = "127.0.0.1", port: int = 3001, token: str | None = None
    ) -> None:
        self.agent = agent
        self.token = token or None
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> AgentServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_ref: AgentServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(data).encode())

    def do_GET(self) -> None:
        agent = self.server_ref.agent
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            self._send(200, agent.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            phases = {m: s.phase.value for m, s in agent.states.items()}
            self._json(200, {"status": "ok", "actor": agent.actor, "models": phases})
        elif match := _REPORT.match(path):
            self._report(agent.home, match.group(1), bool(match.group(2)), match.group(3))
        else:
            self._json(
                404, {"error": f"no route {path}; try /metrics, /healthz, /reports/latest/<model>"}
            )

    def _report(self, home: Path, model: str, as_json: bool, page: str | None) -> None:
        try:
            latest = latest_report(home, model)
        except ConfigError as exc:
            return self._json(400, {"error": str(exc)})
        name = JSON_NAME if as_json else page or HTML_NAME
        file = latest / name if latest else None
        if file is None or not file.is_file():
            return self._json(
                404,
                {
                    "error": f"no report {name} for {model!r} yet; run `pruneguard agent report {model}`"
                },
            )
        content_type = "application/json" if as_json else "text/html; charset=utf-8"
        self._send(200, file.read_bytes(), content_type)

    def do_POST(self) -> None:
        token = self.server_ref.token
        if self.path != "/alerts" or token is None:
            return self._json(
                404, {"error": "no such route (the /alerts webhook is off without a token)"}
            )
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return self._json(401, {"error": "missing or wrong bearer token"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(413, {"error": f"body of {length} bytes exceeds {MAX_BODY}"})
        try:
            alerts = parse_alerts(json.loads(self.rfile.read(length) or b"null"))
        except (ValueError, ConfigError) as exc:
            return self._json(400, {"error": str(exc)})
        agent = self.server_ref.agent
        results = [agent.request_rollback(model, reason) for model, reason in alerts]
        self._json(202, {"results": results})
