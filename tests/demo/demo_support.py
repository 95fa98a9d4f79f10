"""Helpers shared by the demo's tests: settings against the session's broker and stand-in."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from data_generator.config import COLLECTIONS
from demo.settings import DemoSettings
from lakehouse_common.lake import bronze_table_uri


def demo_settings(work_dir: Path, kafka: str, standin_uri: str, **overrides: Any) -> DemoSettings:
    """A small, fast demo using the test session's Kafka broker and MongoDB stand-in."""
    values: dict[str, Any] = {
        "work_dir": work_dir,
        "database": f"demo_{uuid.uuid4().hex[:8]}",
        "scale": 0.02,
        "rate": 20.0,
        "duration_seconds": 5.0,
        "catch_up_timeout_seconds": 120.0,
        "spark_driver_memory": "1g",
        "kafka_bootstrap_servers": kafka,
        "standin_uri": standin_uri,
        "mongo_uri": None,
        **overrides,
    }
    return DemoSettings(**values)


def bronze_event_ids(lake_root: Path, database: str) -> dict[str, pl.Series]:
    """Every bronze table's event ids, by collection."""
    ids = {}
    for collection in COLLECTIONS:
        table = DeltaTable(bronze_table_uri(str(lake_root), database, collection))
        ids[collection] = pl.from_arrow(table.to_pyarrow_table(columns=["__event_id"]))["__event_id"]  # type: ignore[index]
    return ids
