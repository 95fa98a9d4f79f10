"""cdc_service's errors, each derived from the project's hierarchy (``lakehouse_common.errors``)
so the service loop maps them to one action: retry (``TransientError``), stop with the
message (``FatalError``) or dead-letter (``PoisonMessageError``)."""

from __future__ import annotations

from lakehouse_common.errors import FatalError, TransientError

# MongoDB server error codes the service treats specially.
CHANGE_STREAM_HISTORY_LOST = 286
INVALID_RESUME_TOKEN = 260
CHANGE_STREAM_FATAL_ERROR = 280
HISTORY_LOST_CODES = frozenset({CHANGE_STREAM_HISTORY_LOST, INVALID_RESUME_TOKEN, CHANGE_STREAM_FATAL_ERROR})


class HistoryLostError(FatalError):
    """A stream's resume point is gone from the oplog (or unusable): changes in between are lost.

    Carries what the operator needs: the stream, its collections, the last position and
    the code MongoDB returned.
    """

    def __init__(self, message: str, *, stream_id: str, code: int | None) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


class DeliveryFailedError(TransientError):
    """Kafka did not acknowledge an event in time; the pipeline restarts from its last checkpoint."""


class MongoUnavailableError(TransientError):
    """MongoDB could not be reached or stepped down; the stream resumes from its last position."""


class ProducerFencedError(FatalError):
    """Another instance took over the transactional id: this one must stop (exactly-once)."""


__all__ = [
    "CHANGE_STREAM_FATAL_ERROR",
    "CHANGE_STREAM_HISTORY_LOST",
    "HISTORY_LOST_CODES",
    "INVALID_RESUME_TOKEN",
    "DeliveryFailedError",
    "HistoryLostError",
    "MongoUnavailableError",
    "ProducerFencedError",
]
