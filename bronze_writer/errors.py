"""What the bronze writer does about each error: one classification, one action per error.

As kafka-delta-ingest maps every error to an action in one ``match``, ``classify`` is the
only place that decides; the consumer loop, the landing retries and the record guards
ask it and act on the answer:

==============================================  ===============  ============================
error                                           where            action
==============================================  ===============  ============================
SystemExit, KeyboardInterrupt, MemoryError      anywhere         stop
``OffsetDiscontinuityError``                    anywhere         reset (the policy decides)
Kafka ``_AUTO_OFFSET_RESET``                    consuming        reset (the policy decides)
Kafka ``FENCED_INSTANCE_ID`` (also as fatal)    anywhere         recreate the consumer
Kafka fatal (``fatal()`` or ``_FATAL``)         anywhere         stop
other Kafka errors                              anywhere         retry (librdkafka recovers)
``PoisonMessageError`` (contract errors)        anywhere         dead-letter
``TransientError``                              anywhere         retry
other ``LakehouseError`` (fatal, config)        anywhere         stop
native panic, RecursionError, any exception     records          dead-letter (isolate first)
OSError, deltalake errors                       storage          retry (with backoff)
anything else                                   storage, Kafka   stop
==============================================  ===============  ============================

"Records" is decoding and typing, whose only input is what records contain: whatever they
raise (a Rust panic is a ``BaseException`` named ``PanicException``, one class per native
extension) is the record's fault, so ``isolate_poison`` finds the offending records by
bisection and they go to the dead-letter table with the error as the reason.

A static member (``group.instance.id``) is fenced when the group saw the same instance id
join again: after a coordinator outage longer than the session timeout librdkafka rejoins
on its own and the broker fences its old member id, whose next commit or heartbeat then
fails with ``FENCED_INSTANCE_ID``, raised as a fatal error (librdkafka#3437). The consumer
is unusable afterwards, the writer is not: it closes the consumer and opens a new one with
the same instance id (positions come from the Delta log). A fence that keeps coming back is
another live replica with the same id, and stops the writer (``BronzeWriter``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from confluent_kafka import KafkaError, KafkaException
from deltalake.exceptions import DeltaError

from bronze_writer.offsets import Discontinuity
from lakehouse_common.errors import FatalError, LakehouseError, PoisonMessageError, TransientError


class Action(StrEnum):
    """What to do about an error."""

    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    RESET = "reset"
    RECREATE = "recreate"  # close the consumer and open a new one
    STOP = "stop"


class Stage(StrEnum):
    """Where an error happened, which decides what an unknown exception means."""

    RECORDS = "records"  # decoding and typing: functions of the records' content only
    STORAGE = "storage"  # Delta reads and commits
    KAFKA = "kafka"  # the consumer and the admin client


class OffsetDiscontinuityError(FatalError):
    """A partition's offsets do not continue from what bronze landed (see bronze_writer.offsets)."""

    def __init__(self, message: str, discontinuity: Discontinuity) -> None:
        super().__init__(message)
        self.discontinuity = discontinuity


class PoisonRowsError(PoisonMessageError):
    """Typing failed on some rows of a batch; ``rows`` maps (partition, offset) to the error."""

    def __init__(self, rows: dict[tuple[int, int], BaseException]) -> None:
        self.rows = rows
        first = next(iter(rows.values()))
        super().__init__(f"{len(rows)} record(s) cannot be typed: {describe(first)}")


_ALWAYS_STOP = (SystemExit, KeyboardInterrupt, GeneratorExit, MemoryError)


def is_native_panic(error: BaseException) -> bool:
    """A Rust panic surfaced by pyo3 (polars, deltalake, the codec: each has its own class)."""
    return type(error).__name__ == "PanicException"


def kafka_error_of(error: BaseException | KafkaError) -> KafkaError | None:
    if isinstance(error, KafkaError):
        return error
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


# librdkafka's text for FENCED_INSTANCE_ID; its fatal form (code _FATAL) names the cause only in the message.
_FENCED_INSTANCE_TEXT = KafkaError(KafkaError.FENCED_INSTANCE_ID).str()


def is_fenced_instance(error: KafkaError) -> bool:
    """The group fenced this static member: another client joined with its ``group.instance.id``."""
    return error.code() == KafkaError.FENCED_INSTANCE_ID or (
        error.code() == KafkaError._FATAL and _FENCED_INSTANCE_TEXT in error.str()
    )


def classify(error: BaseException | KafkaError, stage: Stage) -> Action:
    """The one decision of what an error means for the writer (table in the module docstring)."""
    if isinstance(error, _ALWAYS_STOP):
        return Action.STOP
    if isinstance(error, OffsetDiscontinuityError):
        return Action.RESET
    kafka_error = kafka_error_of(error)
    if kafka_error is not None:
        if is_fenced_instance(kafka_error):
            return Action.RECREATE
        if kafka_error.fatal() or kafka_error.code() == KafkaError._FATAL:
            return Action.STOP
        if kafka_error.code() == KafkaError._AUTO_OFFSET_RESET:
            return Action.RESET
        return Action.RETRY
    assert isinstance(error, BaseException)  # a bare KafkaError is answered above
    if isinstance(error, PoisonMessageError):
        return Action.DEAD_LETTER
    if isinstance(error, TransientError):
        return Action.RETRY
    if isinstance(error, LakehouseError):
        return Action.STOP
    if stage is Stage.RECORDS and (isinstance(error, Exception) or is_native_panic(error)):
        return Action.DEAD_LETTER
    if stage is Stage.STORAGE and isinstance(error, (OSError, DeltaError)):
        return Action.RETRY
    return Action.STOP


def describe(error: BaseException) -> str:
    """``Type: message`` for logs and dead-letter reasons (a panic's message alone says little)."""
    message = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {message}"[:2000]


def isolate_poison(rows: Sequence[int], attempt: Callable[[list[int]], object]) -> dict[int, BaseException]:
    """The rows on which ``attempt`` fails on its own, found by bisection.

    ``attempt(subset)`` runs the failing step on those rows only. Halves that succeed are
    cleared, halves that fail are split again, so k bad rows among n cost about
    ``2 k log2(n)`` attempts. An error that is not the records' fault stops the search.
    """
    found: dict[int, BaseException] = {}
    pending = [list(rows)]
    while pending:
        part = pending.pop()
        try:
            attempt(part)
            continue
        except BaseException as error:  # classified right below
            if classify(error, Stage.RECORDS) is not Action.DEAD_LETTER:
                raise
            if len(part) == 1:
                found[part[0]] = error
                continue
        middle = len(part) // 2
        pending += [part[middle:], part[:middle]]
    return found


__all__ = [
    "Action",
    "OffsetDiscontinuityError",
    "PoisonRowsError",
    "Stage",
    "classify",
    "describe",
    "is_fenced_instance",
    "is_native_panic",
    "isolate_poison",
    "kafka_error_of",
]
