"""The one error-to-action classification, and the bisection that isolates poison records (no broker)."""

from __future__ import annotations

import polars as pl
import pytest
from confluent_kafka import KafkaError, KafkaException
from deltalake.exceptions import CommitFailedError, DeltaError

from bronze_writer.errors import Action, OffsetDiscontinuityError, Stage, classify, isolate_poison
from bronze_writer.offsets import Discontinuity, DiscontinuityKind, KafkaIdentity
from lakehouse_common.errors import ConfigError, FatalError, MissingEventFieldError, TransientError

_DISCONTINUITY = Discontinuity(
    "cdc.shop.orders", 0, DiscontinuityKind.BEHIND, 100, 0, 5, KafkaIdentity(None, None), KafkaIdentity(None, None)
)


# How the fence reaches the consumer loop (seen on the broker: a message error, code _FATAL).
_FENCED_FATAL = (
    "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id: OffsetCommit failed: "
    "Broker: Static consumer fenced by other consumer with same group.instance.id"
)


def _panic() -> BaseException:
    """A Rust panic as pyo3 raises it: a BaseException, not an Exception."""
    error = pl.exceptions.PanicException("called `Result::unwrap()` on an `Err` value")
    assert not isinstance(error, Exception)
    return error


@pytest.mark.parametrize(
    ("error", "stage", "action"),
    [
        (KeyboardInterrupt(), Stage.RECORDS, Action.STOP),
        (MemoryError(), Stage.RECORDS, Action.STOP),
        (OffsetDiscontinuityError("gap", _DISCONTINUITY), Stage.KAFKA, Action.RESET),
        (KafkaException(KafkaError(KafkaError._AUTO_OFFSET_RESET)), Stage.KAFKA, Action.RESET),
        (KafkaException(KafkaError(KafkaError._FATAL)), Stage.KAFKA, Action.STOP),
        (KafkaError(KafkaError._FATAL), Stage.KAFKA, Action.STOP),
        # A fenced static member: its consumer is replaced (chaos finding F6), in each form librdkafka reports it.
        (KafkaException(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True)), Stage.KAFKA, Action.RECREATE),
        (KafkaError(KafkaError.FENCED_INSTANCE_ID), Stage.KAFKA, Action.RECREATE),
        (KafkaException(KafkaError(KafkaError._FATAL, _FENCED_FATAL)), Stage.KAFKA, Action.RECREATE),
        (KafkaError(KafkaError._FATAL, "Fatal error: Broker: Not coordinator"), Stage.KAFKA, Action.STOP),
        (KafkaException(KafkaError(KafkaError._TRANSPORT)), Stage.KAFKA, Action.RETRY),
        (KafkaError(KafkaError._ALL_BROKERS_DOWN), Stage.KAFKA, Action.RETRY),
        (MissingEventFieldError("no _id"), Stage.RECORDS, Action.DEAD_LETTER),
        (TransientError("broker away"), Stage.STORAGE, Action.RETRY),
        (FatalError("stop"), Stage.RECORDS, Action.STOP),
        (ConfigError("bad"), Stage.STORAGE, Action.STOP),
        (_panic(), Stage.RECORDS, Action.DEAD_LETTER),
        (RecursionError("maximum recursion depth exceeded"), Stage.RECORDS, Action.DEAD_LETTER),
        (ValueError("odd value"), Stage.RECORDS, Action.DEAD_LETTER),
        (_panic(), Stage.STORAGE, Action.STOP),
        (OSError("connection reset"), Stage.STORAGE, Action.RETRY),
        (CommitFailedError("conflict"), Stage.STORAGE, Action.RETRY),
        (DeltaError("object store"), Stage.STORAGE, Action.RETRY),
        (Exception("Schema error: Duplicate field name"), Stage.STORAGE, Action.STOP),
        (ValueError("bug"), Stage.KAFKA, Action.STOP),
    ],
)
def test_each_error_maps_to_one_action(error: BaseException, stage: Stage, action: Action) -> None:
    assert classify(error, stage) is action


def test_bisection_finds_exactly_the_rows_that_fail_alone() -> None:
    bad = {3, 17, 18, 63}
    attempts: list[list[int]] = []

    def attempt(rows: list[int]) -> None:
        attempts.append(rows)
        if bad & set(rows):
            raise pl.exceptions.PanicException(f"row {min(bad & set(rows))}")

    found = isolate_poison(range(64), attempt)
    assert set(found) == bad
    assert all(type(error).__name__ == "PanicException" for error in found.values())
    assert len(attempts) < 64  # far fewer than trying every row


def test_bisection_stops_on_errors_that_are_not_the_records_fault() -> None:
    def attempt(rows: list[int]) -> None:
        raise ValueError("bad record") if len(rows) > 4 else MemoryError

    with pytest.raises(MemoryError):
        isolate_poison(range(8), attempt)
