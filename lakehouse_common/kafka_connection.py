"""Kafka's connection state, logged once per change; the errors in between are counted, not logged.

While a broker is down librdkafka reports every failed connection attempt twice: to the
error callback (``_TRANSPORT``, ``_ALL_BROKERS_DOWN``) and in its own log (``FAIL`` lines),
about 19 lines a second per service (chaos finding F2), and its own lines went to stderr as
plain text. One ``KafkaConnection`` per service sees both: it is each client's ``error_cb``
and ``logger`` (``client_config()``), so librdkafka's lines reach Python logging as JSON
(logger ``librdkafka``). The first connection error logs ``Kafka connection lost`` (WARNING);
until a client succeeds again (the service calls ``reachable()`` on a delivery, a read or a
commit) further connection errors and librdkafka's connection lines are only counted
(``<service>_kafka_client_errors_total{code}``); then ``Kafka connection back`` (INFO) gives
the outage's length and the suppressed errors by code. Other errors are logged as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge

logger = logging.getLogger(__name__)
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")

# What librdkafka reports while it cannot reach a broker.
CONNECTION_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TIMED_OUT}
)
# librdkafka's log facilities of connection failures (``FAIL``: a connection attempt or a connection failed).
_CONNECTION_FACILITIES = frozenset({"FAIL"})
_LOST = "Kafka connection lost; further connection errors are counted, not logged, until a client succeeds again"
# The label of librdkafka's suppressed log lines in the error counter.
_LOG_LINE_CODE = "log_line"


class KafkaConnection:
    """The connection state as this service's Kafka clients report it (thread-safe)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        prefix: str = "lakehouse",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._suppressed: Tally[str] = Tally()
        registry = registry or CollectorRegistry()
        self.errors = Counter(
            f"{prefix}_kafka_client_errors",
            "Errors librdkafka reported (error callback), and its connection log lines suppressed while Kafka "
            "was unreachable (code log_line), by code.",
            ["code"], registry=registry,
        )
        self.unreachable = Gauge(
            f"{prefix}_kafka_unreachable", "1 while this service's Kafka clients cannot reach the cluster.", registry=registry
        )

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def client_config(self) -> dict[str, Any]:
        """The ``error_cb`` and ``logger`` entries for a confluent-kafka client's configuration."""
        return {"error_cb": self.on_error, "logger": self}

    def on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback for non-fatal and fatal errors alike (fatal ones are the caller's business)."""
        code = error.name()
        self.errors.labels(code).inc()
        if error.code() not in CONNECTION_ERRORS:
            logger.warning("Kafka error", extra={"error": str(error), "code": code})
            return
        if self._mark_down(code):
            logger.warning(_LOST, extra={"error": str(error), "code": code})

    def log(self, level: int, message: str, *args: Any) -> None:
        """librdkafka's log (``logger`` setting): ``log(level, "%s [%s] %s", facility, client, text)``."""
        facility = args[0] if args else ""
        if facility in _CONNECTION_FACILITIES and (self.down or level >= logging.WARNING):
            self.errors.labels(_LOG_LINE_CODE).inc()
            if self._mark_down(_LOG_LINE_CODE):
                logger.warning(_LOST, extra={"error": message % args if args else message, "code": facility})
            return
        LIBRDKAFKA_LOGGER.log(level, message, *args)

    def reachable(self) -> None:
        """A client just succeeded against the cluster: log the end of an outage (cheap when there was none)."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            outage = self._clock() - self._down_since
            suppressed, self._suppressed = dict(self._suppressed), Tally()
            self._down_since = None
        self.unreachable.set(0)
        logger.info(
            "Kafka connection back",
            extra={"outage_seconds": round(outage, 1), "suppressed_errors": sum(suppressed.values()),
                   "suppressed_by_code": suppressed},
        )

    def _mark_down(self, code: str) -> bool:
        """Count a connection error; True when it is the first of an outage (the caller logs it)."""
        with self._lock:
            if self._down_since is not None:
                self._suppressed[code] += 1
                return False
            self._down_since = self._clock()
        self.unreachable.set(1)
        return True


__all__ = ["CONNECTION_ERRORS", "LIBRDKAFKA_LOGGER", "KafkaConnection"]
