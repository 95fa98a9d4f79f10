"""Fixtures for the bronze_writer tests: a lake per test, writer settings on the session broker, CDC topics."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # bronze_support, shared by the tests of this package

from bronze_support import use_lake  # noqa: E402

from bronze_writer.settings import BronzeSettings  # noqa: E402
from lakehouse_common.settings import load_settings  # noqa: E402
from local_stack.kafka import KafkaBroker  # noqa: E402


@pytest.fixture
def lake_root(lake: Any) -> str:
    """The test's lake root, on a local directory and on the object store (the ``lake`` fixture)."""
    use_lake(lake.root, lake.storage_options)
    return lake.root


@pytest.fixture
def writer_settings(kafka_broker: KafkaBroker, lake: Any, lake_root: str) -> Callable[..., BronzeSettings]:
    """Settings for a writer on the session broker and this test's lake; overrides as nested dicts."""

    def make(topic_pattern: str, group_id: str, **overrides: Any) -> BronzeSettings:
        batch = {"max_latency_seconds": 0.5, **overrides.pop("batch", {})}
        consumer = {"topic_pattern": topic_pattern, "group_id": group_id, "session_timeout_ms": 6000, **overrides.pop("consumer", {})}
        return load_settings(
            BronzeSettings,
            kafka={"bootstrap_servers": kafka_broker.bootstrap_servers},
            consumer=consumer,
            batch=batch,
            lake={"root": lake_root, "storage_options": lake.storage_options, **overrides.pop("lake", {})},
            http={"host": "127.0.0.1", "port": 0},
            **overrides,
        )

    return make


@pytest.fixture
def cdc_topic(new_topic: Callable[..., str]) -> Iterator[str]:
    """A three-partition topic named like cdc_service's: cdc.<db>.<collection>."""
    yield new_topic(partitions=3, prefix="cdc.shop")
