"""The one error-to-action map of cdc_service, without a broker or a MongoDB."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from pymongo.errors import AutoReconnect, OperationFailure

from cdc_service.actions import Action, classify
from cdc_service.errors import (
    DeliveryFailedError,
    HistoryLostError,
    PipelineModifiesResumeTokenError,
    ProducerFencedError,
    change_stream_error,
)
from cdc_service.settings import HistoryLostPolicy
from lakehouse_common.errors import ConfigError, FatalError, TransientError, UndecodableEventError
from lakehouse_common.lifecycle import ExitCode

PIPELINE_MODIFIED_ID = (
    "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. "
    "Modifying the _id field of an event makes it impossible to resume the stream from that point. Only "
    'transformations that retain the unmodified _id field are allowed. Expected: { _id: { _data: "8265" } } '
    "but found: {}"
)
TOKEN_NOT_FOUND = 'resume of change stream was not possible, as the resume token was not found. {_data: "8265"}'
HISTORY_LOST = "Resume of change stream was not possible, as the resume point may no longer be in the oplog."


def _failure(code: int, message: str, labels: tuple[str, ...] = ()) -> OperationFailure:
    return OperationFailure(message, code, {"ok": 0, "errmsg": message, "code": code, "errorLabels": list(labels)})


def _mapped(code: int, message: str) -> BaseException:
    mapped = change_stream_error(_failure(code, message, ("NonResumableChangeStreamError",)), stream_id="db:shop", position="now")
    assert mapped is not None
    return mapped


@pytest.mark.parametrize("policy", list(HistoryLostPolicy))
def test_error_280_is_classified_by_its_cause_so_resnapshot_never_loops(policy: HistoryLostPolicy) -> None:
    modified = _mapped(280, PIPELINE_MODIFIED_ID)
    assert isinstance(modified, PipelineModifiesResumeTokenError) and not isinstance(modified, HistoryLostError)
    decision = classify(modified, on_history_lost=policy)
    assert (decision.action, decision.exit_code) == (Action.STOP, ExitCode.BAD_CONFIGURATION)  # fix the settings

    other = classify(_mapped(280, "some other fatal change stream condition"), on_history_lost=policy)
    assert (other.action, other.exit_code) == (Action.STOP, ExitCode.FAILED)  # neither retried nor re-copied

    for code, message in ((280, TOKEN_NOT_FOUND), (286, HISTORY_LOST), (260, "cannot resume: invalid resume token")):
        lost = _mapped(code, message)
        assert isinstance(lost, HistoryLostError) and lost.code == code
        decision = classify(lost, on_history_lost=policy)
        if policy is HistoryLostPolicy.RESNAPSHOT:
            assert decision.action is Action.RESNAPSHOT
        else:
            assert (decision.action, decision.exit_code) == (Action.STOP, ExitCode.HISTORY_LOST)


def test_other_server_errors_are_left_to_the_resume_logic() -> None:
    assert change_stream_error(_failure(6, "host unreachable"), stream_id="db:shop", position="now") is None


def _kafka(code: int, *, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "from the test", fatal=fatal))


@pytest.mark.parametrize(
    ("error", "action", "exit_code"),
    [
        (TransientError("broker away"), Action.RETRY, None),
        (DeliveryFailedError("not acknowledged"), Action.RETRY, None),
        (BufferError("Local: Queue full"), Action.RETRY, None),
        (AutoReconnect("primary stepped down"), Action.RETRY, None),
        (_failure(11602, "InterruptedDueToReplStateChange"), Action.RETRY, None),
        (_failure(91, "shutdown in progress", ("ResumableChangeStreamError",)), Action.RETRY, None),
        (_kafka(KafkaError._MSG_TIMED_OUT), Action.RETRY, None),
        (_kafka(KafkaError._TRANSPORT), Action.RETRY, None),
        (_kafka(KafkaError.MSG_SIZE_TOO_LARGE), Action.DEAD_LETTER, None),
        (UndecodableEventError("bad bytes"), Action.DEAD_LETTER, None),
        (_kafka(KafkaError._FATAL, fatal=True), Action.STOP, ExitCode.FAILED),
        (ProducerFencedError("fenced"), Action.STOP, ExitCode.FAILED),
        (FatalError("would lose data"), Action.STOP, ExitCode.FAILED),
        (ConfigError("bad topic mapping"), Action.STOP, ExitCode.BAD_CONFIGURATION),
        (_failure(13, "not authorized on shop to execute command"), Action.STOP, ExitCode.FAILED),
        (ValueError("a bug"), Action.STOP, ExitCode.FAILED),
    ],
)
def test_every_error_maps_to_one_action(error: BaseException, action: Action, exit_code: ExitCode | None) -> None:
    decision = classify(error, on_history_lost=HistoryLostPolicy.RESNAPSHOT)
    assert decision.action is action
    if exit_code is not None:
        assert decision.exit_code is exit_code


def test_a_native_panic_stops_the_service_instead_of_escaping() -> None:
    class PanicException(BaseException):  # what pyo3 raises: a BaseException, not an Exception
        pass

    decision = classify(PanicException("codec panicked"), on_history_lost=HistoryLostPolicy.FAIL)
    assert (decision.action, decision.exit_code) == (Action.STOP, ExitCode.FAILED)
