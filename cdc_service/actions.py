"""The one error-to-action map of cdc_service (as kafka-delta-ingest's ``lib.rs`` has one ``match``).

Every failure the service meets, from a reader thread, a snapshot worker, the producer or
the publishing loop, ends in ``classify``, which names one action:

- ``RETRY``: a dependency is away for now; the attempt ends and a new one starts from the
  last checkpoints after a backoff;
- ``DEAD_LETTER``: one record cannot be published; it goes to the dead-letter topic with
  its reason and publishing goes on (the publisher acts on it where the record is at hand);
- ``RESNAPSHOT``: a stream's history is lost and the operator chose ``resnapshot``: its
  collections are copied again at a new position;
- ``STOP``: continuing could lose data or cannot help; the service stops with the exit code.

``CdcService.run`` matches on the action only, so no other place decides what an error means.

One refinement for chunked copies (``copy_refused``): a copy whose query MongoDB refuses
outright (a signal's bad filter) fails alone, its signal answered with the reason, instead
of stopping the service; every other error of a copy takes the action above.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka import KafkaError, KafkaException
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from cdc_service.change_stream import RESUMABLE_CODES
from cdc_service.errors import HistoryLostError
from cdc_service.settings import HistoryLostPolicy
from lakehouse_common.errors import ConfigError, FatalError, PoisonMessageError, TransientError
from lakehouse_common.lifecycle import ExitCode

# Kafka's "this record is too large" (raised by produce() against message.max.bytes, or by the broker).
_RECORD_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})


class Action(StrEnum):
    """What the service does about a failure."""

    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    RESNAPSHOT = "resnapshot"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    """An action, the exit code when it is ``STOP``, and why (for the log line)."""

    action: Action
    reason: str
    exit_code: ExitCode = ExitCode.FAILED


def _kafka_error(error: KafkaException) -> KafkaError | None:
    return error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None


def record_too_large(error: BaseException) -> bool:
    """Kafka refused one record for its size: that record is dead-lettered, nothing else changes."""
    if not isinstance(error, KafkaException):
        return False
    kafka_error = _kafka_error(error)
    return kafka_error is not None and kafka_error.code() in _RECORD_TOO_LARGE


def _transient_operation(error: OperationFailure) -> bool:
    if error.has_error_label("NonResumableChangeStreamError"):
        return False
    return (
        error.code in RESUMABLE_CODES
        or error.has_error_label("RetryableWriteError")
        or error.has_error_label("ResumableChangeStreamError")
    )


def classify(error: BaseException, *, on_history_lost: HistoryLostPolicy = HistoryLostPolicy.FAIL) -> Decision:
    """The action for ``error``; the only place cdc_service decides what a failure means."""
    match error:
        case HistoryLostError():
            if on_history_lost is HistoryLostPolicy.RESNAPSHOT:
                return Decision(Action.RESNAPSHOT, "history_lost")
            return Decision(Action.STOP, "history_lost", ExitCode.HISTORY_LOST)
        case PoisonMessageError():
            return Decision(Action.DEAD_LETTER, type(error).__name__)
        case ConfigError():
            return Decision(Action.STOP, type(error).__name__, ExitCode.BAD_CONFIGURATION)
        case FatalError():
            return Decision(Action.STOP, type(error).__name__)
        case TransientError() | BufferError():
            return Decision(Action.RETRY, type(error).__name__)
        case KafkaException():
            if record_too_large(error):
                return Decision(Action.DEAD_LETTER, "record_too_large")
            kafka_error = _kafka_error(error)
            if kafka_error is not None and kafka_error.fatal():
                return Decision(Action.STOP, "KafkaFatalError")
            return Decision(Action.RETRY, "KafkaException")
        case ConnectionFailure():
            return Decision(Action.RETRY, type(error).__name__)
        case OperationFailure():
            if _transient_operation(error):
                return Decision(Action.RETRY, type(error).__name__)
            return Decision(Action.STOP, "OperationFailure")  # MongoDB refused: rights, a bad option
        case PyMongoError():
            return Decision(Action.RETRY, type(error).__name__)
        case _:  # a bug, or a native panic (a BaseException): stop loudly; the checkpoint is safe
            return Decision(Action.STOP, type(error).__name__)


def copy_refused(error: BaseException) -> str | None:
    """Why MongoDB refused a chunked copy's query, when that is what ``error`` is; else None."""
    if isinstance(error, OperationFailure) and classify(error).action is Action.STOP:
        return f"MongoDB refused the copy's query: {error} (code {error.code})"
    return None


__all__ = ["Action", "Decision", "classify", "copy_refused", "record_too_large"]
