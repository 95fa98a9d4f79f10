"""Bronze fixtures follow docs/bronze-schema.md: envelope, lossless payloads, typed columns, rescue, ingest log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from bson import Decimal128, ObjectId
from deltalake import DeltaTable

from data_generator import BronzeFixtureWriter, ChangeEventEncoder, Delete, Insert, Update
from lakehouse_common.bronze_schema import BSON_TYPE_METADATA, ENVELOPE
from lakehouse_common.lake import bronze_table_uri, ingest_log_uri

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CUSTOMER = ObjectId("65a1b2c3d4e5f60718293a4b")


def _events(operations: list) -> list[dict]:
    return list(ChangeEventEncoder("shop").events(operations))


def test_envelope_payloads_and_typed_columns(tmp_path: Path) -> None:
    document = {
        "_id": CUSTOMER,
        "name": "Ada",
        "visits": 3,
        "score": 2.5,
        "vip": True,
        "joined": AT,
        "balance": Decimal128("10.25"),
        "address": {"city": "Berlin"},
        "tags": ["a", "b"],
        "nothing": None,
    }
    after = {**document, "visits": 4}
    ingested = datetime(2025, 3, 2, tzinfo=UTC)
    writer = BronzeFixtureWriter(tmp_path)
    landed = writer.write(
        _events(
            [
                Insert("customers", document, AT),
                Update("customers", CUSTOMER, after, AT, {"visits": 4}),
                Delete("customers", CUSTOMER, AT),
            ]
        ),
        ingested,
    )
    assert landed == {"shop.customers": 3}
    table = DeltaTable(bronze_table_uri(str(tmp_path), "shop", "customers")).to_pyarrow_table()
    assert table.schema.names[: len(ENVELOPE)] == ENVELOPE.names
    assert table.schema.field("visits").type == pa.int64() and table.schema.field("score").type == pa.float64()
    assert table.schema.field("vip").type == pa.bool_() and table.schema.field("joined").type == pa.timestamp("us", tz="UTC")
    assert "nothing" not in table.schema.names, "a field only ever null has no type yet, so no column"
    families = {
        field.name: field.metadata.get(BSON_TYPE_METADATA)
        for field in DeltaTable(bronze_table_uri(str(tmp_path), "shop", "customers")).schema().fields
        if field.metadata
    }
    assert families == {
        "_id": "objectId", "name": "string", "visits": "long", "score": "double", "vip": "bool",
        "joined": "date", "balance": "decimal", "address": "object", "tags": "array",
    }  # fmt: skip
    rows = table.to_pylist()
    insert, update, delete = rows
    assert [row["__operation"] for row in rows] == ["insert", "update", "delete"]
    assert insert["__document_id"] == '{"$oid":"65a1b2c3d4e5f60718293a4b"}'
    assert insert["__document_key"] == '{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}'
    assert json.loads(insert["__resume_token"]) == {"_data": insert["__event_id"]}
    assert insert["_id"] == str(CUSTOMER) and insert["balance"] == "10.25"
    assert json.loads(insert["address"]) == {"city": "Berlin"} and json.loads(insert["tags"]) == ["a", "b"]
    assert json.loads(insert["__full_document"])["balance"] == {"$numberDecimal": "10.25"}
    assert update["visits"] == 4 and json.loads(update["__update_description"])["updatedFields"] == {"visits": 4}
    assert delete["__full_document"] is None and delete["name"] is None
    assert insert["__cluster_time"] == AT and insert["__ingested_at"] == ingested
    assert insert["__kafka_topic"] == "cdc.shop.customers"
    assert insert["__kafka_partition"] == update["__kafka_partition"] == delete["__kafka_partition"]
    assert [row["__kafka_offset"] for row in rows] == [0, 1, 2]
    log = DeltaTable(ingest_log_uri(str(tmp_path))).to_pyarrow_table().to_pylist()
    assert len(log) == 1 and log[0]["rows"] == 3 and log[0]["collection"] == "customers"
    assert log[0]["first_event_id"] == insert["__event_id"] and log[0]["last_event_id"] == delete["__event_id"]


def test_type_conflicts_are_rescued_never_cast_and_integers_widen_into_doubles(tmp_path: Path) -> None:
    first = {"_id": 1, "zip": 2139, "price": 2.7, "amount": 1.5, "owner": CUSTOMER, "__v": 0, "Code": "x"}
    later = {"_id": 2, "zip": "02139", "price": 3, "amount": 2.7, "owner": "not-an-id", "__v": 1, "code": "y", "a b": 1}
    BronzeFixtureWriter(tmp_path).write(_events([Insert("customers", first, AT)]))
    # A new writer learns the established column types from the table itself.
    BronzeFixtureWriter(tmp_path).write(
        _events([Insert("customers", later, AT), Insert("customers", {"_id": 3, "price": 7.5}, AT)])
    )
    frame = pl.read_delta(bronze_table_uri(str(tmp_path), "shop", "customers")).sort("_id")
    assert frame["zip"].to_list() == [2139, None, None]
    assert frame["price"].to_list() == [2.7, 3.0, 7.5], "an integer into a double column converts exactly"
    rescued = json.loads(frame["__rescued_data"][1])
    assert rescued == {
        "zip": {"type": "string", "value": "02139"},
        "owner": {"type": "string", "value": "not-an-id"},  # a string column of ObjectIds takes no plain string
        "code": {"type": "string", "value": "y"},  # differs only in case from the column Code
        "a b": {"type": "int", "value": 1},  # not a valid Delta column name
    }
    assert frame["__v"].to_list() == [0, 1, None], "__v (Mongoose's version key) is an ordinary field"
    assert frame["owner"].to_list() == [str(CUSTOMER), None, None]
    assert frame["__rescued_data"][0] is None and frame["__rescued_data"][2] is None
    assert json.loads(frame["__full_document"][1])["zip"] == "02139", "the raw payload keeps the value"
    positions = frame.select("__kafka_partition", "__kafka_offset")
    assert not positions.is_duplicated().any(), "a second writer continues each partition's offsets"


def test_the_fixture_lands_what_bronze_writer_lands(tmp_path: Path) -> None:
    """Same events through bronze_writer's decoder and table, and through the fixture: same rows.

    dbt's tests build bronze with the fixture; this keeps it honest against the real writer
    (everything but the Kafka positions and ingestion times, which only Kafka can give).
    """
    import bson

    import lakehouse_codec
    from bronze_writer.decode import Records, decode_topic
    from bronze_writer.settings import LakeSettings
    from bronze_writer.tables import BronzeTable
    from data_generator import GeneratorConfig, SalesMarketingGenerator
    from lakehouse_common.contract import ValueFormat, encode_events, headers_for, topic_name

    generator = SalesMarketingGenerator(GeneratorConfig(seed=3, scale=0.05, history_days=10, drift_every=60))
    encoder = ChangeEventEncoder("shop")
    events = list(encoder.snapshot(generator.initial_load())) + list(encoder.events(generator.changes(300)))
    BronzeFixtureWriter(tmp_path / "fixture").write(events)
    by_collection: dict[str, list[dict]] = {}
    for event in events:
        by_collection.setdefault(event["ns"]["coll"], []).append(event)
    for collection, collection_events in by_collection.items():
        records = Records()
        values = []
        for offset, encoded in enumerate(encode_events([bson.encode(event) for event in collection_events], ValueFormat.JSON)):
            records.partitions.append(0)
            records.offsets.append(offset)
            records.timestamps.append(0)
            records.keys.append(encoded.key)
            records.sizes.append(len(encoded.value))
            values.append(encoded.value)
            records.headers.append(tuple(headers_for(encoded, ValueFormat.JSON)))
        records.values = lakehouse_codec.RecordValues(values)
        records.formats = bytearray(len(values))  # 0: the headers are parsed
        table = BronzeTable(LakeSettings(root=str(tmp_path / "real")), "shop", collection)
        table.land(decode_topic(topic_name("cdc", "shop", collection), records), "parity-test")
    positions = {"__kafka_topic", "__kafka_partition", "__kafka_offset", "__kafka_timestamp", "__ingested_at"}
    for collection in by_collection:
        fixture = pl.read_delta(bronze_table_uri(str(tmp_path / "fixture"), "shop", collection)).sort("__event_id")
        real = pl.read_delta(bronze_table_uri(str(tmp_path / "real"), "shop", collection)).sort("__event_id")
        assert fixture.columns == real.columns, collection
        columns = [name for name in fixture.columns if name not in positions]
        assert fixture.select(columns).equals(real.select(columns)), f"{collection} differs from bronze_writer's"


def _land_with_bronze_writer(root: Path, events: list[dict]) -> None:
    """The same events through bronze_writer's own stages (decode, type, commit), as one batch of one partition."""
    import bson
    from confluent_kafka import Message

    from bronze_writer.decode import Records
    from bronze_writer.lander import Lander
    from bronze_writer.metrics import BronzeMetrics
    from bronze_writer.settings import BronzeSettings
    from lakehouse_common.contract import ValueFormat, encode_events, headers_for
    from lakehouse_common.settings import load_settings

    settings = load_settings(BronzeSettings, lake={"root": str(root)}, writer_id="test-writer")
    topic = "cdc.shop.customers"
    messages = [
        Message(
            topic=topic,
            partition=0,
            offset=offset,
            key=encoded.key,
            value=encoded.value,
            headers=headers_for(encoded, ValueFormat.JSON),
            timestamp=(1, 1_740_830_400_000),
        )  # fmt: skip
        for offset, encoded in enumerate(encode_events([bson.encode(event) for event in events], ValueFormat.JSON))
    ]
    lander = Lander(settings, BronzeMetrics())
    lander.land(lander.decode({topic: Records.from_messages(messages)}), 10)


def test_generated_tables_have_the_schemas_bronze_writer_writes(tmp_path: Path) -> None:
    """One schema module: the generator's bronze and ingest-log tables are typed, named and annotated as the writer's."""
    document = {
        "_id": CUSTOMER, "name": "Ada", "visits": 3, "score": 2.5, "vip": True, "joined": AT,
        "balance": Decimal128("10.25"), "address": {"city": "Berlin"}, "tags": ["a", "b"], "bad name": 1, "__DB": "x",
    }  # fmt: skip
    events = _events(
        [Insert("customers", document, AT), Update("customers", CUSTOMER, {**document, "visits": 4}, AT, {"visits": 4})]
    )
    BronzeFixtureWriter(tmp_path / "generated").write(events)
    _land_with_bronze_writer(tmp_path / "landed", events)

    def schema(root: Path, uri: str) -> list[dict]:
        return json.loads(DeltaTable(uri.format(root=root)).schema().to_json())["fields"]

    bronze = str(bronze_table_uri("{root}", "shop", "customers"))
    assert schema(tmp_path / "generated", bronze) == schema(tmp_path / "landed", bronze)
    for root in ("generated", "landed"):  # silver reads bronze's new commits through the change data feed
        configuration = DeltaTable(bronze.format(root=tmp_path / root)).metadata().configuration
        assert configuration.get("delta.enableChangeDataFeed") == "true", root
    log = str(ingest_log_uri("{root}"))
    assert schema(tmp_path / "generated", log) == schema(tmp_path / "landed", log)
    generated = pl.read_delta(bronze.format(root=tmp_path / "generated"))
    landed = pl.read_delta(bronze.format(root=tmp_path / "landed"))
    same = [name for name in generated.columns if not name.startswith("__kafka") and name != "__ingested_at"]
    assert generated.select(same).equals(landed.select(same))
