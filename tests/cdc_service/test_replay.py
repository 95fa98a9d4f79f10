"""``cdc-service replay --from-bronze`` reads the bronze marks wherever the lake is: a local
directory or the object store (with ``--storage-option``s)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from cdc_service.positions import Position
from cdc_service.replay import plan_from_bronze
from cdc_service.scope import StreamSpec
from lakehouse_common import lake as lake_layout
from lakehouse_common.lake import HighWaterMark


def test_replay_from_bronze_finds_the_marks_on_either_lake(lake: Any) -> None:
    topic = "cdc.shop.orders"
    marks = {0: "82AA0005", 1: "82AA0003"}
    recorded = {
        f"{topic}/{partition}": HighWaterMark(topic, partition, 10, event_id, json.dumps({"_data": event_id}))
        for partition, event_id in marks.items()
    }
    write_deltalake(
        lake_layout.bronze_table_uri(lake.root, "shop", "orders"),
        pa.table({"__event_id": list(marks.values())}),
        commit_properties=CommitProperties(custom_metadata={lake_layout.HIGH_WATER_MARKS_KEY: lake_layout.encode_high_water_marks(recorded)}),
        storage_options=lake.storage_options,
    )
    orders = StreamSpec.parse("coll:shop.orders")
    plan = plan_from_bronze([orders], {"coll:shop.orders": ["shop.orders"]}, lake.root, [], lake.storage_options)
    assert plan.positions == {"coll:shop.orders": Position.from_token({"_data": "82AA0003"})}
