"""cdc_service's errors, each derived from the project's hierarchy (``lakehouse_common.errors``)
so ``cdc_service.actions.classify`` maps each to one action: retry (``TransientError``), stop
with the message (``FatalError``, ``ConfigError``), copy again (``HistoryLostError``, when
configured) or dead-letter (``PoisonMessageError``).

MongoDB's change-stream failures are named here once, by code and, for code 280, by cause:
280 (ChangeStreamFatalError) is raised both for a resume token the server cannot find (a
lost resume point, on servers older than 4.4) and for a pipeline stage that modified the
events' ``_id``. Only the first is lost history; copying again cures nothing for the second.
"""

from __future__ import annotations

from pymongo.errors import OperationFailure

from cdc_service.checkpoints import CheckpointKind
from lakehouse_common.errors import ConfigError, FatalError, TransientError

# MongoDB server error codes the service treats specially.
CHANGE_STREAM_HISTORY_LOST = 286
INVALID_RESUME_TOKEN = 260
CHANGE_STREAM_FATAL_ERROR = 280
HISTORY_LOST_CODES = frozenset({CHANGE_STREAM_HISTORY_LOST, INVALID_RESUME_TOKEN})

# How the server words the causes of error 280 (db/pipeline/document_source_change_stream_*).
_TOKEN_NOT_FOUND = ("resume token was not found", "resume point may no longer be in the oplog")
_ID_MODIFIED = "was modified by the pipeline"


class HistoryLostError(FatalError):
    """A stream's resume point is gone from the oplog (or unusable): changes in between are lost.

    Carries what the operator needs: the stream, the code MongoDB returned, and the kind
    of the checkpoint it tried to resume from (``snapshot``: it never streamed past its
    copy, so copying again would only lose the new copy's resume point the same way).
    """

    def __init__(self, message: str, *, stream_id: str, code: int | None, checkpoint_kind: CheckpointKind | None = None) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code
        self.checkpoint_kind = checkpoint_kind


class PipelineModifiesResumeTokenError(ConfigError):
    """A ``stream.pipeline`` stage changed the events' ``_id`` (their resume token): fix the setting."""


class ChangeStreamFatalError(FatalError):
    """MongoDB ended a change stream for a reason neither a retry nor a new copy cures."""


class DeliveryFailedError(TransientError):
    """Kafka did not acknowledge an event in time; the pipeline restarts from its last checkpoint."""


class MongoUnavailableError(TransientError):
    """MongoDB could not be reached or stepped down; the stream resumes from its last position."""


class ProducerFencedError(FatalError):
    """Another instance took over the transactional id: this one must stop (exactly-once)."""


def change_stream_error(error: OperationFailure, *, stream_id: str, position: str) -> Exception | None:
    """The project's error for a change stream failure MongoDB will not let a resume cure, else None.

    ``position`` describes where the stream tried to (re)start, for the message.
    """
    code = error.code
    message = str((error.details or {}).get("errmsg") or error)
    where = f"stream {stream_id} cannot resume from {position}: {message} (code {code})"
    if code in HISTORY_LOST_CODES:
        return HistoryLostError(where, stream_id=stream_id, code=code)
    if code != CHANGE_STREAM_FATAL_ERROR:
        return None
    lowered = message.lower()
    if any(cause in lowered for cause in _TOKEN_NOT_FOUND):
        return HistoryLostError(where, stream_id=stream_id, code=code)
    if _ID_MODIFIED in lowered:
        return PipelineModifiesResumeTokenError(
            f"stream {stream_id}: a stream.pipeline stage (CDC_STREAM__PIPELINE) modified the events' _id, "
            f"their resume token; keep _id unchanged: {message} (code {code})"
        )
    return ChangeStreamFatalError(f"stream {stream_id}: MongoDB ended the change stream: {message} (code {code})")


__all__ = [
    "CHANGE_STREAM_FATAL_ERROR",
    "CHANGE_STREAM_HISTORY_LOST",
    "HISTORY_LOST_CODES",
    "INVALID_RESUME_TOKEN",
    "ChangeStreamFatalError",
    "DeliveryFailedError",
    "HistoryLostError",
    "MongoUnavailableError",
    "PipelineModifiesResumeTokenError",
    "ProducerFencedError",
    "change_stream_error",
]
