"""The HTTP endpoint every service exposes: /metrics, /healthz and /readyz.

/healthz answers 200 while the process loop is alive (Kubernetes liveness); /readyz
answers 200 once the service is connected and working (readiness). Each service
passes callables that report its own state, with a reason when it is not healthy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    """A health answer: whether it is OK and, if not, why."""

    ok: bool
    detail: str = ""


StatusCheck = Callable[[], Status]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Probes hit these endpoints every few seconds; do not log each request."""


class ObservabilityServer:
    """Serves metrics and health in a background thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        liveness: StatusCheck,
        readiness: StatusCheck,
        host: str = "0.0.0.0",
        port: int = 9400,
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._liveness = liveness
        self._readiness = readiness
        self._server = make_server(host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="observability-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> ObservabilityServer:
        self._thread.start()
        logger.info("serving /metrics, /healthz and /readyz", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            status = (self._liveness if path == "/healthz" else self._readiness)()
            body = json.dumps({"status": "ok" if status.ok else "unavailable", "detail": status.detail}).encode()
            start_response(
                "200 OK" if status.ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]


__all__ = ["ObservabilityServer", "Status", "StatusCheck"]
