"""The service: pipeline attempts, one after another, until stopped or told to stop.

One entry point, ``CdcService.run()``. Each attempt is one ``PipelineAttempt`` object,
owning its clients, queue, threads and stop event, and closed in order when it ends
(cdc_service/pipeline.py). When an attempt fails, ``classify`` names the action and
``run()`` matches on it alone: retry after a backoff, copy a stream again, or stop with
its exit code (cdc_service/actions.py). What is republished after a restart, consumers
drop by event id. ``request_stop()`` (the signal handler's only call) ends the attempt's
loop, which drains, flushes and checkpoints before the attempt closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import KafkaException
from pymongo.errors import PyMongoError

from cdc_service.actions import Action, Decision, classify
from cdc_service.errors import HistoryLostError
from cdc_service.metrics import CdcMetrics
from cdc_service.pipeline import PipelineAttempt, ServiceState
from cdc_service.planning import namespace_filter
from cdc_service.settings import CdcSettings
from lakehouse_common.errors import LakehouseError
from lakehouse_common.kafka_connection import KafkaConnection
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.observability import ObservabilityServer, Status
from lakehouse_common.redaction import redact

logger = logging.getLogger(__name__)


class CdcService:
    """MongoDB change streams to Kafka. ``run()`` until ``request_stop()``."""

    def __init__(self, settings: CdcSettings, *, metrics: CdcMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or CdcMetrics()
        self.namespaces = namespace_filter(settings)
        self.state = ServiceState(kafka=KafkaConnection(self.metrics.registry, "cdc"))
        self.attempt: PipelineAttempt | None = None  # the current (or last) attempt
        self._stop = threading.Event()
        self._server: ObservabilityServer | None = None

    # -- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to drain, checkpoint and return (safe from a signal handler)."""
        self._stop.set()

    def liveness(self) -> Status:
        age = time.monotonic() - self.state.loop_tick
        return Status(age < 120, f"loop last ran {age:.0f}s ago")

    def readiness(self) -> Status:
        return self.state.ready

    def serve_http(self) -> ObservabilityServer:
        http = self.settings.http
        self._server = ObservabilityServer(
            self.metrics.registry, self.liveness, self.readiness, host=http.host, port=http.port
        ).start()
        return self._server

    # -- the run ---------------------------------------------------------------------------

    def run(self, *, snapshot_only: bool = False, force_snapshot: Iterable[str] | None = None) -> ExitCode:
        """Run until stopped; return the process exit code.

        ``snapshot_only`` copies the streams' collections at a fresh position, records that
        position as their checkpoint and returns; ``force_snapshot`` names streams whose
        checkpoint is ignored and copied again (all streams when empty and snapshot_only).
        """
        self.state.snapshot_only = snapshot_only
        self.state.force_snapshot = set(force_snapshot or ())
        if snapshot_only and not self.state.force_snapshot:
            self.state.force_snapshot = None  # every planned stream
        while not self._stop.is_set():
            try:
                with PipelineAttempt(self.settings, self.metrics, self.namespaces, self.state, self._stop) as attempt:
                    self.attempt = attempt
                    attempt.run()
                return ExitCode.OK
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as error:  # noqa: BLE001 - every failure goes through classify
                decision = classify(error, on_history_lost=self.settings.on_history_lost)
                self.metrics.errors.labels(decision.reason).inc()
                match decision.action:
                    case Action.RETRY:
                        backoff = self._backoff(error)
                        if backoff is None:
                            return ExitCode.FAILED
                        if self._stop.wait(backoff):
                            break
                    case Action.RESNAPSHOT:
                        assert isinstance(error, HistoryLostError)
                        if not self._copy_again(error):
                            return ExitCode.HISTORY_LOST
                    case Action.STOP:
                        self._log_stop(error, decision)
                        return decision.exit_code
                    case Action.DEAD_LETTER:
                        # The publisher dead-letters where the record is at hand; one escaping it is a bug.
                        logger.error("stopping: a record's error escaped its handler: %s", redact(str(error)),
                                     extra={"error_type": type(error).__name__})
                        return ExitCode.FAILED
        return ExitCode.OK

    def _backoff(self, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None after ``retry_max_attempts`` failures in a row."""
        settings = self.settings
        self.state.consecutive_failures += 1
        self.metrics.restarts.inc()
        failures = self.state.consecutive_failures
        if settings.retry_max_attempts and failures > settings.retry_max_attempts:
            logger.error("giving up after %d consecutive failures: %s", settings.retry_max_attempts, redact(str(error)))
            return None
        backoff = min(settings.retry_initial_backoff_s * 2 ** (failures - 1), settings.retry_max_backoff_s)
        self.state.ready = Status(False, f"restarting after: {redact(str(error))[:200]}")
        logger.warning(
            "pipeline failed; restarting from the last checkpoint",
            extra={"error": redact(str(error)), "error_type": type(error).__name__, "backoff_s": backoff},
        )
        return backoff

    def _copy_again(self, error: HistoryLostError) -> bool:
        """Mark the stream for a new snapshot; False when that cannot help (it would loop)."""
        stream_id = error.stream_id
        forced = self.state.force_snapshot
        if forced is None or stream_id in forced or error.checkpoint_kind == "snapshot":
            # It never streamed past its last copy: the copy outlasts the oplog window (or the
            # resume point is unusable for another reason); another copy would end the same way.
            logger.error(
                "%s -- the stream lost its resume point again before streaming past its last copy: "
                "not copying it again (enlarge the oplog window, then `cdc-service snapshot --stream %s`)",
                error, stream_id, extra={"stream": stream_id, "code": error.code},
            )
            return False
        forced.add(stream_id)
        logger.warning(
            "resume point lost: copying the stream's collections again",
            extra={"stream": stream_id, "code": error.code, "error": str(error)},
        )
        return True

    def _log_stop(self, error: BaseException, decision: Decision) -> None:
        if isinstance(error, HistoryLostError):
            logger.error(str(error), extra={"stream": error.stream_id, "code": error.code})
            return
        expected = isinstance(error, (LakehouseError, KafkaException, PyMongoError))
        logger.error(
            "stopping: %s", redact(str(error)), extra={"error_type": type(error).__name__, "exit_code": int(decision.exit_code)},
            exc_info=None if expected else error,  # a bug or a native panic: show where
        )


__all__ = ["CdcService"]
