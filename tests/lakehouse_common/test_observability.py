"""The metrics and health endpoint answers as Kubernetes probes and Prometheus expect."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from lakehouse_common.observability import ObservabilityServer, Status


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("events_total", "Events seen.", registry=registry).inc(3)
    ready = {"value": Status(False, "waiting for Kafka")}
    server = ObservabilityServer(registry, lambda: Status(True), lambda: ready["value"], host="127.0.0.1", port=0).start()
    try:
        status, body = _get(server.port, "/metrics")
        assert status == 200 and b"events_total 3.0" in body

        assert _get(server.port, "/healthz")[0] == 200
        status, body = _get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["detail"] == "waiting for Kafka"

        ready["value"] = Status(True)
        assert _get(server.port, "/readyz")[0] == 200
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()
