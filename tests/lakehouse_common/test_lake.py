"""The lake layout and the bronze commit metadata both services rely on."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from lakehouse_common import lake
from lakehouse_common.lake import HighWaterMark


def test_layout() -> None:
    assert lake.bronze_table_uri("s3://bucket/lake/", "shop", "orders") == "s3://bucket/lake/bronze/shop/orders"
    assert lake.bronze_table_uri("/data", "shop", "order items").startswith("/data/bronze/shop/order_items-")
    assert lake.ingest_log_uri("/data") == "/data/bronze/_ingest_log"
    assert lake.dead_letter_uri("/data") == "/data/bronze/_dead_letters"
    assert lake.app_id("cdc.shop.orders", 2) == "cdc.shop.orders-2"


def test_high_water_marks_round_trip_through_a_delta_commit(tmp_path: Path) -> None:
    marks = {
        "cdc.shop.orders/0": HighWaterMark("cdc.shop.orders", 0, 41, "82AA01", '{"_data":"82AA01"}'),
        "cdc.shop.orders/1": HighWaterMark("cdc.shop.orders", 1, 17, "82AA00", '{"_data":"82AA00"}'),
    }
    table = str(tmp_path / "orders")
    write_deltalake(table, pa.table({"x": [1]}))
    write_deltalake(
        table,
        pa.table({"x": [2]}),
        mode="append",
        commit_properties=CommitProperties(
            custom_metadata={
                lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(marks),
                lake.BATCH_KEY: lake.batch_metadata({"cdc.shop.orders/0": (40, 41)}, {"cdc.shop.orders/0": ("82A9", "82AA01")}),
            }
        ),
    )
    write_deltalake(table, pa.table({"x": [3]}), mode="append")  # e.g. a compaction: no marks

    read = lake.read_high_water_marks(table)
    assert read == marks
    assert lake.earliest_resume_token(read) == '{"_data":"82AA00"}'


def test_a_missing_table_has_no_marks(tmp_path: Path) -> None:
    assert lake.read_high_water_marks(str(tmp_path / "nothing")) == {}
    assert lake.earliest_resume_token({}) is None


def test_distinct_collections_never_share_a_bronze_table() -> None:
    """Path segments use the topics' escaping: sanitising alone would merge these pairs."""
    from lakehouse_common.lake import bronze_table_uri, path_segment

    assert bronze_table_uri("r", "shop", "order items") != bronze_table_uri("r", "shop", "order_items")
    assert path_segment("заказы") != path_segment("товары")
    assert path_segment("orders") == "orders"
    escaped = path_segment("order items")
    assert path_segment(escaped) == escaped  # a name read back from a topic maps to the same table
