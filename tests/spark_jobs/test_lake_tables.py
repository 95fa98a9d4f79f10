"""Counting the lake's silver and gold tables, also while dbt is still creating some."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake.exceptions import DeltaError

from spark_jobs.lake_tables import layer_counts


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    pl.DataFrame({"id": [1, 2]}).write_delta(str(tmp_path / "gold" / "orders"))
    pl.DataFrame({"id": [1, 2, 3]}).write_delta(str(tmp_path / "silver" / "stg_mongo__orders"))
    pl.DataFrame({"id": [1, 1, 2, 3]}).write_delta(str(tmp_path / "silver" / "stg_mongo__orders_history"))
    # A table dbt is creating: its log directory exists, its first commit does not yet.
    (tmp_path / "silver" / "stg_mongo__customers" / "_delta_log").mkdir(parents=True)
    return tmp_path


def test_counts_are_keyed_by_collection_and_gold_table(lake: Path) -> None:
    counts = layer_counts(str(lake), skip_uncommitted=True)

    assert counts == {"silver": {"orders": 3}, "silver_history": {"orders": 4}, "gold": {"orders": 2}}


def test_an_uncommitted_table_fails_the_count_unless_skipped(lake: Path) -> None:
    with pytest.raises(DeltaError):
        layer_counts(str(lake))
