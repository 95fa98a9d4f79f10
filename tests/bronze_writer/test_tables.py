"""Exactly-once Delta commits: offsets and marks in the log, replays, drift, concurrent replicas."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from bronze_support import change_event, collect, event_id, land, open_table, read_bronze, records, storage_options
from bson import Timestamp
from confluent_kafka import Message
from deltalake import DeltaTable

from bronze_writer.decode import decode_topic
from bronze_writer.lander import Lander
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.settings import BronzeSettings, LakeSettings
from bronze_writer.tables import BronzeTable, namespace_for_topic
from cdc_service.positions import Position
from cdc_service.replay import plan_from_bronze
from cdc_service.scope import StreamSpec
from lakehouse_common import contract, lake
from lakehouse_common.contract import ValueFormat
from lakehouse_common.settings import load_settings

TOPIC = "cdc.shop.orders"


@pytest.fixture
def settings(lake_root: str) -> BronzeSettings:
    return load_settings(
        BronzeSettings, lake={"root": lake_root, "storage_options": storage_options(lake_root)}, writer_id="test-writer"
    )


@pytest.fixture
def lander(settings: BronzeSettings) -> Lander:
    return Lander(settings, BronzeMetrics())


def _batch(first: int, count: int, *, partition: int = 0, first_offset: int | None = None, **document: object) -> list[Message]:
    events = [change_event(sequence, {"_id": sequence, **document}) for sequence in range(first, first + count)]
    return records(events, topic=TOPIC, partition=partition, first_offset=first if first_offset is None else first_offset)


def test_topics_map_to_collection_tables() -> None:
    assert namespace_for_topic("cdc.shop.orders", "cdc", {}) == ("shop", "orders")
    assert namespace_for_topic("cdc.shop.order.items", "cdc", {}) == ("shop", "order.items")
    assert namespace_for_topic("orders-v2", "cdc", {"orders-v2": "shop.orders"}) == ("shop", "orders")
    assert namespace_for_topic("shop.orders", "", {}) == ("shop", "orders")
    assert namespace_for_topic("other", "cdc", {}) == ("_topics", "other")


def test_each_commit_records_offsets_batch_and_cumulative_marks(lander: Lander, settings: BronzeSettings) -> None:
    land(lander, _batch(1, 5, partition=0, first_offset=0) + _batch(101, 3, partition=1, first_offset=0))
    land(lander, _batch(6, 2, partition=0, first_offset=5))
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    table = open_table(uri)
    assert table.version() == 2  # version 0 creates the table empty
    assert table.transaction_version(lake.app_id(TOPIC, 0)) == 6
    assert table.transaction_version(lake.app_id(TOPIC, 1)) == 2
    latest = table.history(1)[0]
    assert json.loads(latest[lake.BATCH_KEY]) == {
        "offsets": {f"{TOPIC}/0": [5, 6]},
        "event_ids": {f"{TOPIC}/0": [event_id(6), event_id(7)]},
    }
    marks = lake.read_high_water_marks(uri, storage_options(uri))
    assert marks == {
        f"{TOPIC}/0": lake.HighWaterMark(TOPIC, 0, 6, event_id(7), f'{{"_data":"{event_id(7)}"}}'),
        f"{TOPIC}/1": lake.HighWaterMark(TOPIC, 1, 2, event_id(103), f'{{"_data":"{event_id(103)}"}}'),
    }
    assert lake.earliest_resume_token(marks) == f'{{"_data":"{event_id(7)}"}}'
    log = read_bronze(lake.ingest_log_uri(settings.lake.root)).sort("table_version")
    assert log["table_version"].to_list() == [1, 2]
    assert log["rows"].to_list() == [8, 2]
    assert json.loads(log["offset_ranges"][1]) == {f"{TOPIC}/0": [5, 6]}
    assert log["writer_id"].to_list() == ["test-writer", "test-writer"]


def test_replays_and_redeliveries_add_no_rows(lander: Lander, settings: BronzeSettings) -> None:
    land(lander, _batch(1, 10))
    # The same records again (a restart before the Kafka commit): nothing to do at all.
    assert land(lander, _batch(1, 10)).commits == []
    # Offset 10 again (already landed), then a replay from cdc_service: old events at new offsets,
    # then two new ones; a producer retry duplicates one.
    replay = _batch(4, 7, first_offset=10) + _batch(11, 2, first_offset=17)
    retry = records([change_event(12, {"_id": 12})], topic=TOPIC, first_offset=19)
    landed = land(lander, replay + retry)
    commit = landed.commits[0]
    assert (commit.rows, commit.already_landed, commit.duplicates_dropped) == (2, 1, 7)
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert sorted(rows["__event_id"].to_list()) == [event_id(sequence) for sequence in range(1, 13)]
    assert open_table(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).transaction_version(f"{TOPIC}-0") == 19
    # Every drop is counted in the ingest log, the batch that committed nothing included (no table version).
    log = read_bronze(lake.ingest_log_uri(settings.lake.root)).sort("committed_at")
    assert log.select("table_version", "rows", "already_landed", "duplicates_dropped").rows() == [
        (1, 10, 0, 0), (None, 0, 10, 0), (2, 2, 1, 7)
    ]  # fmt: skip
    assert json.loads(log["offset_ranges"][1]) == {f"{TOPIC}/0": [1, 10]}


def test_many_events_for_one_document_in_one_batch_all_land_in_order(lander: Lander, settings: BronzeSettings) -> None:
    events = [change_event(1, {"_id": 7, "n": 0})]
    events += [
        change_event(sequence, None, operation="update", document_id=7,
                     extra={"updateDescription": {"updatedFields": {"n": sequence}, "removedFields": []}})
        for sequence in range(2, 50)
    ]  # fmt: skip
    events.append(change_event(50, None, operation="delete", document_id=7))
    land(lander, records(events, topic=TOPIC))
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).sort("__kafka_offset")
    assert rows.height == 50
    assert rows["__operation"].to_list() == ["insert"] + ["update"] * 48 + ["delete"]
    assert rows["__event_id"].is_sorted()
    assert set(rows["__document_id"].to_list()) == {"7"}
    assert json.loads(rows["__update_description"][48])["updatedFields"] == {"n": 49}


def _orders_marker() -> bytes:
    """The snapshot-complete marker of a copy of shop.orders at event 5, attempt 1."""
    return contract.snapshot_complete_event(
        database="shop",
        collection="orders",
        position=event_id(5),
        attempt=1,
        documents=1,
        cluster_time=Timestamp(1_700_000_005, 1),
        wall_time=datetime(2024, 1, 1, tzinfo=UTC),
    )


def test_a_snapshot_complete_marker_lands_as_a_row_of_no_document_once(lander: Lander, settings: BronzeSettings) -> None:
    marker = _orders_marker()
    first = land(lander, records([change_event(1, {"_id": 1}), marker], topic=TOPIC))
    again = land(lander, records([marker], ValueFormat.BSON, topic=TOPIC, first_offset=2))  # published twice: one id
    assert first.dead_letters == again.dead_letters == 0
    assert again.commits[0].duplicates_dropped == 1
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).filter(
        pl.col("__operation") == "snapshotComplete"
    )
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert row["__event_id"] == contract.snapshot_complete_event_id(event_id(5), 1)
    assert row["__document_id"] is None and row["__document_key"] is None
    assert row["__cluster_time"] == datetime.fromtimestamp(1_700_000_005, UTC) and row["__cluster_time_increment"] == 1
    # The partition's last landed record is the marker: replay from bronze reads its cluster time
    # from the table as bronze_writer wrote it (string_view columns; a pyarrow filter refused them).
    orders = StreamSpec.parse("coll:shop.orders")
    plan = plan_from_bronze(
        [orders], {orders.stream_id: ["shop.orders"]}, settings.lake.root, [], settings.lake.deltalake_options()
    )
    assert plan.positions == {orders.stream_id: Position.from_time((1_700_000_005, 1))}


def test_a_record_of_no_document_republished_into_another_partition_lands_once(lander: Lander, settings: BronzeSettings) -> None:
    """Keyless, a republished marker may go to a partition whose mark is below its id: it is looked up anyway."""
    marker = _orders_marker()
    land(lander, records([change_event(1, {"_id": 1}), marker], topic=TOPIC))
    again = land(lander, records([change_event(2, {"_id": 2}), marker], topic=TOPIC, partition=1))
    assert (again.commits[0].rows, again.commits[0].duplicates_dropped, again.commits[0].ids_looked_up) == (1, 1, 1)
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert rows.filter(pl.col("__operation") == "snapshotComplete").height == 1 and rows.height == 3


def test_schema_drift_across_batches(lander: Lander, settings: BronzeSettings) -> None:
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    land(lander, records([change_event(1, {"_id": 1, "qty": 1, "status": "new"})], topic=TOPIC))
    # A field appears, one disappears, one changes type.
    land(lander, records([change_event(2, {"_id": 2, "qty": 2.7, "channel": "web"})], topic=TOPIC, first_offset=1))
    land(lander, records([change_event(3, {"_id": 3, "qty": 3})], ValueFormat.BSON, topic=TOPIC, first_offset=2))
    table = open_table(uri)
    fields = {field.name: field for field in table.schema().fields}
    assert fields["qty"].type.type == "long" and fields["channel"].type.type == "string"
    rows = read_bronze(uri).sort("__kafka_offset")
    assert rows["qty"].to_list() == [1, None, 3]
    assert rows["status"].to_list() == ["new", None, None]
    assert rows["channel"].to_list() == [None, "web", None]
    assert json.loads(rows["__rescued_data"][1]) == {"qty": {"type": "double", "value": 2.7}}
    assert '"qty":2.7' in rows["__full_document"][1]


def test_dead_letters_are_written_once_even_when_a_batch_is_read_again(lander: Lander, settings: BronzeSettings) -> None:
    poison = Message(topic=TOPIC, partition=0, offset=2, key=None, value=b"oops", headers=[], timestamp=(1, 0))
    batch = [*_batch(1, 2), poison, *_batch(3, 1, first_offset=3)]
    first = land(lander, batch)
    again = land(lander, batch)
    assert (first.dead_letters, again.dead_letters) == (1, 0)
    letters = read_bronze(lake.dead_letter_uri(settings.lake.root))
    assert letters.select("topic", "partition", "offset", "value", "error_type").rows() == [
        (TOPIC, 0, 2, b"oops", "MissingEventFieldError")
    ]
    assert read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).height == 3


def test_a_partition_with_only_poison_still_advances(lander: Lander, settings: BronzeSettings) -> None:
    land(lander, _batch(1, 1))
    poison = Message(topic=TOPIC, partition=0, offset=1, key=None, value=b"oops", headers=[], timestamp=(1, 0))
    land(lander, [poison])
    table = open_table(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert table.transaction_version(f"{TOPIC}-0") == 1


def test_concurrent_replicas_neither_lose_nor_duplicate_and_keep_marks_right(settings: BronzeSettings) -> None:
    """Two writers (partitions split) and a zombie (re-landing a partition it lost) race on one table."""
    batches_per_writer = 12
    per_batch = 20

    def writer(partition: int, errors: list[BaseException]) -> None:
        try:
            table = BronzeTable(settings.lake, "shop", "orders")
            for batch in range(batches_per_writer):
                first = partition * 10_000 + batch * per_batch
                messages = _batch(first, per_batch, partition=partition, first_offset=batch * per_batch)
                table.land(decode_topic(TOPIC, collect(messages)), f"writer-{partition}")
        except BaseException as error:  # reported below
            errors.append(error)

    def zombie(errors: list[BaseException]) -> None:
        try:
            table = BronzeTable(settings.lake, "shop", "orders")
            for batch in range(batches_per_writer):
                messages = _batch(batch * per_batch, per_batch, partition=0, first_offset=batch * per_batch)
                table.land(decode_topic(TOPIC, collect(messages)), "zombie")
        except BaseException as error:
            errors.append(error)

    errors: list[BaseException] = []
    threads = [threading.Thread(target=writer, args=(partition, errors)) for partition in (0, 1, 2)]
    threads.append(threading.Thread(target=zombie, args=(errors,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    rows = read_bronze(uri)
    expected = {event_id(p * 10_000 + n) for p in (0, 1, 2) for n in range(batches_per_writer * per_batch)}
    assert rows.height == len(expected)
    assert set(rows["__event_id"].to_list()) == expected
    last_offset = batches_per_writer * per_batch - 1
    marks = lake.read_high_water_marks(uri, storage_options(uri))
    assert {key: (mark.offset, mark.event_id) for key, mark in marks.items()} == {
        f"{TOPIC}/{p}": (last_offset, event_id(p * 10_000 + last_offset)) for p in (0, 1, 2)
    }
    table = open_table(uri)
    assert [table.transaction_version(f"{TOPIC}-{p}") for p in (0, 1, 2)] == [last_offset] * 3
    # Every commit's marks are right for its own version, not only the latest one.
    for commit in table.history():
        if lake.HIGH_WATER_MARKS_KEY not in commit:
            continue
        at_version = read_bronze_version(uri, commit["version"])
        for key, mark in lake.decode_high_water_marks(commit[lake.HIGH_WATER_MARKS_KEY]).items():
            partition = int(key.rsplit("/", 1)[1])
            landed = at_version.filter(pl.col("__kafka_partition") == partition)
            assert landed["__event_id"].max() == mark.event_id


def read_bronze_version(uri: str, version: int) -> pl.DataFrame:
    return pl.read_delta(uri, version=version, columns=["__event_id", "__kafka_partition"], storage_options=storage_options(uri))


def test_a_stale_writer_conflicts_reloads_and_merges_the_other_writers_marks(settings: BronzeSettings) -> None:
    first = BronzeTable(settings.lake, "shop", "orders")
    first.land(decode_topic(TOPIC, collect(_batch(1, 2, partition=0, first_offset=0))), "a")  # versions 0, 1
    stale = BronzeTable(settings.lake, "shop", "orders")  # both now hold version 1
    first.land(decode_topic(TOPIC, collect(_batch(3, 2, partition=0, first_offset=2))), "a")  # version 2
    result = stale.land(decode_topic(TOPIC, collect(_batch(500, 2, partition=1, first_offset=0))), "b")
    assert result is not None and result.conflicts == 1 and result.version == 3
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    marks = lake.read_high_water_marks(uri, storage_options(uri))
    assert {key: mark.event_id for key, mark in marks.items()} == {f"{TOPIC}/0": event_id(4), f"{TOPIC}/1": event_id(501)}


def test_redeliveries_inside_one_batch_are_dropped_by_exact_id(lander: Lander, settings: BronzeSettings) -> None:
    # Partition 0 repeats ids 2..3 after 4; partition 1 interleaves with lower ids that are new to the table,
    # and repeats id 2 (the same event, as after partitions were added): one copy of each event lands.
    part0 = records([change_event(n, {"_id": n}) for n in (1, 2, 3, 4, 2, 3, 5)], topic=TOPIC, partition=0)
    part1 = records([change_event(n, {"_id": n}) for n in (0, 2, 9)], topic=TOPIC, partition=1)
    interleaved = [part0[0], part1[0], part0[1], part0[2], part1[1], part0[3], part0[4], part1[2], part0[5], part0[6]]
    [commit] = land(lander, interleaved).commits
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders")).sort("__kafka_partition", "__kafka_offset")
    assert rows.select("__kafka_partition", "__event_id").rows() == [
        (0, event_id(1)), (0, event_id(2)), (0, event_id(3)), (0, event_id(4)), (0, event_id(5)),
        (1, event_id(0)), (1, event_id(9)),
    ]  # fmt: skip
    assert commit.duplicates_dropped == 3 and commit.ids_looked_up == 0  # a new table: nothing to look up


def test_replicas_racing_to_create_a_table_land_a_batch_once(lake_root: str) -> None:
    """deltalake rebases a losing creator's commit even without retries: data never rides on a create."""
    for trial in range(5):
        root = f"{lake_root}/trial{trial}"
        lake_settings = load_settings(BronzeSettings, lake={"root": root, "storage_options": storage_options(lake_root)}).lake
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def racer(
            lake_settings: LakeSettings = lake_settings,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                table = BronzeTable(lake_settings, "shop", "orders")
                barrier.wait()
                table.land(decode_topic(TOPIC, collect(_batch(1, 10, first_offset=0))), "racer")
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=racer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        rows = read_bronze(lake.bronze_table_uri(lake_settings.root, "shop", "orders"))
        assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 11)]


def test_an_ingest_log_of_an_older_release_gains_the_new_columns(lander: Lander, settings: BronzeSettings) -> None:
    from deltalake import write_deltalake

    from lakehouse_common.bronze_schema import INGEST_LOG_SCHEMA

    older = INGEST_LOG_SCHEMA.remove(INGEST_LOG_SCHEMA.get_field_index("already_landed"))
    older = older.remove(older.get_field_index("ids_looked_up"))
    uri = lake.ingest_log_uri(settings.lake.root)
    write_deltalake(uri, older.empty_table(), storage_options=storage_options(uri))
    land(lander, _batch(1, 3))
    log = read_bronze(lake.ingest_log_uri(settings.lake.root))
    assert log.select("rows", "already_landed", "ids_looked_up").rows() == [(3, 0, 0)]


def test_the_log_is_checkpointed_every_interval_and_read_back_from_it(tmp_path: Path) -> None:
    settings = load_settings(
        BronzeSettings, lake={"root": str(tmp_path / "lake"), "checkpoint_interval_commits": 3}, writer_id="test-writer"
    )
    lander = Lander(settings, BronzeMetrics())
    for batch in range(7):
        land(lander, _batch(1 + 10 * batch, 2, first_offset=2 * batch, status="new" if batch % 2 else 7))
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    log_dir = Path(uri) / "_delta_log"
    # Versions 1-7 are the commits (version 0 creates the table); 3 and 6 are due.
    assert sorted(path.name for path in log_dir.glob("*.checkpoint.parquet")) == [
        "00000000000000000003.checkpoint.parquet", "00000000000000000006.checkpoint.parquet"
    ]  # fmt: skip
    # A snapshot loaded without the JSON commits before the last checkpoint is the same table.
    for path in log_dir.glob("0000000000000000000[0-5].json"):
        path.unlink()
    table = DeltaTable(uri)
    assert table.version() == 7
    assert table.transaction_version(lake.app_id(TOPIC, 0)) == 13
    assert read_bronze(uri).height == 14
