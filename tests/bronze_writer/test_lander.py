"""One batch end to end: whatever a record makes decoding or typing raise, it is dead-lettered, never a crash.

Native panics are injected where the real stages call polars and the codec (the records
that trigger them today are rescued by the schema rules, see test_schema.py); everything
else is real: the frames, the Delta tables, the dead-letter table.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from bronze_support import change_event, claim_records, event_id, land, read_bronze, records
from confluent_kafka import Message
from deltalake import DeltaTable

import bronze_writer.decode as decode_module
import bronze_writer.tables as tables_module
from bronze_writer.decode import DeadLetter
from bronze_writer.lander import Lander
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.settings import BronzeSettings
from bronze_writer.tables import DeadLetterTable
from lakehouse_common import lake
from lakehouse_common.claims import LANDED_SUFFIX, claim_path
from lakehouse_common.contract import parse_claim_reference
from lakehouse_common.errors import FatalError
from lakehouse_common.settings import load_settings

TOPIC = "cdc.shop.orders"
PanicException = pl.exceptions.PanicException


@pytest.fixture
def settings(tmp_path: Path) -> BronzeSettings:
    return load_settings(BronzeSettings, lake={"root": str(tmp_path / "lake")}, writer_id="test-writer")


@pytest.fixture
def lander(settings: BronzeSettings) -> Lander:
    return Lander(settings, BronzeMetrics())


def _batch(poison: dict[int, str]) -> list[Message]:
    """Events 1..12 at offsets 0..11; ``poison`` marks some documents for the injected failures."""
    return records(
        [change_event(n, {"_id": n, **({"marker": poison[n]} if n in poison else {})}) for n in range(1, 13)], topic=TOPIC
    )


def _bronze_ids(settings: BronzeSettings) -> list[str]:
    return sorted(read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))["__event_id"].to_list())


def test_a_native_panic_while_decoding_dead_letters_only_its_records(
    lander: Lander, settings: BronzeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = decode_module.decode_topic

    def decode_topic(topic: str, batch: decode_module.Records) -> decode_module.DecodedTopic:
        if any(b"decode-panic" in (value or b"") for value in batch.values.to_list()):
            raise PanicException("index out of bounds: the len is 3 but the index is 7")
        if any(b"decode-recursion" in (value or b"") for value in batch.values.to_list()):
            raise RecursionError("maximum recursion depth exceeded")
        return real(topic, batch)

    monkeypatch.setattr(decode_module, "decode_topic", decode_topic)
    landed = land(lander, _batch({3: "decode-panic", 9: "decode-recursion"}))
    assert _bronze_ids(settings) == [event_id(n) for n in range(1, 13) if n not in (3, 9)]
    letters = read_bronze(lake.dead_letter_uri(settings.lake.root)).sort("offset")
    assert letters.select("offset", "error_type").rows() == [(2, "PanicException"), (8, "RecursionError")]
    assert b'"marker":"decode-panic"' in letters["value"][0]
    assert "index out of bounds" in letters["error"][0]
    assert landed.next_offsets == {(TOPIC, 0): 12}
    table = DeltaTable(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert table.transaction_version(lake.app_id(TOPIC, 0)) == 11


def test_a_native_panic_while_typing_is_dead_lettered_before_the_commit(
    lander: Lander, settings: BronzeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tables_module.resolve

    def resolve(frame: pl.DataFrame, *args: object, **kwargs: object) -> object:
        if frame["__full_document"].str.contains("type-panic").any():
            raise PanicException("called `Result::unwrap()` on an `Err` value: NulError")
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(tables_module, "resolve", resolve)
    poison = Message(topic=TOPIC, partition=0, offset=12, key=None, value=b"not an event", headers=[], timestamp=(1, 0))
    # A decoding dead letter at a higher offset is written first; the typing one below it must still be written.
    land(lander, [*_batch({5: "type-panic"}), poison])
    assert _bronze_ids(settings) == [event_id(n) for n in range(1, 13) if n != 5]
    letters = read_bronze(lake.dead_letter_uri(settings.lake.root)).sort("offset")
    assert letters.select("offset", "error_type").rows() == [(4, "PanicException"), (12, "MissingEventFieldError")]
    assert b'"marker":"type-panic"' in letters["value"][0]
    # Landing the same batch again writes nothing twice.
    again = land(lander, [*_batch({5: "type-panic"}), poison])
    assert again.commits == [] and again.dead_letters == 0
    assert read_bronze(lake.dead_letter_uri(settings.lake.root)).height == 2


def test_an_error_that_is_not_the_records_fault_still_stops(lander: Lander, monkeypatch: pytest.MonkeyPatch) -> None:
    def decode_topic(topic: str, batch: decode_module.Records) -> decode_module.DecodedTopic:
        raise MemoryError

    monkeypatch.setattr(decode_module, "decode_topic", decode_topic)
    with pytest.raises(MemoryError):
        land(lander, _batch({}))


def test_dead_letters_are_exact_by_position_and_value(settings: BronzeSettings) -> None:
    table = DeadLetterTable(settings.lake)

    def letter(offset: int, value: bytes) -> DeadLetter:
        return DeadLetter(TOPIC, 0, offset, None, None, value, None, "UndecodableEventError", "bad")

    assert table.write([letter(10, b"a"), letter(20, b"b")]) == 2
    assert table.write([letter(20, b"b"), letter(10, b"a")]) == 0  # a re-read batch
    # Below the recorded offset but not held (another batch's letter, or the same offset of a recreated topic).
    assert table.write([letter(15, b"c"), letter(10, b"other value")]) == 2
    assert table.write([letter(30, b"d")]) == 1
    rows = read_bronze(lake.dead_letter_uri(settings.lake.root)).sort("offset", "value")
    assert rows.select("offset", "value").rows() == [(10, b"a"), (10, b"other value"), (15, b"c"), (20, b"b"), (30, b"d")]
    assert DeltaTable(lake.dead_letter_uri(settings.lake.root)).transaction_version(lake.app_id(TOPIC, 0)) == 30


def test_a_claimed_event_lands_whole_and_its_claim_is_marked_landed_only_after_the_commit(
    lander: Lander, settings: BronzeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    large = {"_id": 2, "blob": "y" * 200_000}
    batch = [
        *records([change_event(1, {"_id": 1})], topic=TOPIC),
        *claim_records([change_event(2, large)], lander.claims, topic=TOPIC, first_offset=1),
    ]
    digest = parse_claim_reference(batch[1].value()).digest
    marker = Path(settings.lake.root) / (claim_path(digest) + LANDED_SUFFIX)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise FatalError("the commit failed")

    with monkeypatch.context() as patch:
        patch.setattr(tables_module.BronzeTable, "land", refuse)
        with pytest.raises(FatalError):
            land(lander, batch)
    assert not marker.exists()  # not durable in bronze: the claim stays unmarked

    land(lander, batch)
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).sort("__event_id")
    assert rows["__event_id"].to_list() == [event_id(1), event_id(2)]
    assert rows.filter(pl.col("_id") == 2)["blob"].to_list() == ["y" * 200_000]
    assert marker.exists()
    assert lander.metrics.claims_resolved.labels("shop.orders")._value.get() == 1  # noqa: SLF001
