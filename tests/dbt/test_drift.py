"""Schema drift never breaks a build: fields appear as columns, stay when removed, and conflicts are rescued."""

from __future__ import annotations

import json

import polars as pl


def test_the_drifting_build_passed_every_test(built_lake) -> None:
    (second,) = built_lake.second_run
    assert second.exit_code == 0
    nodes = second.summary["nodes"]
    assert nodes["model"] == {"success": 25}
    assert set(nodes["test"]) <= {"pass", "warn"} and nodes["test"].get("pass", 0) > 60


def test_a_new_field_appears_as_a_column_without_editing_sql(built_lake) -> None:
    assert "loyalty_tier" not in built_lake.silver_after_first["stg_mongo__customers"].columns
    customers = built_lake.silver["stg_mongo__customers"]
    assert "loyalty_tier" in customers.columns and "loyalty_tier" in built_lake.history["stg_mongo__customers_history"].columns
    for row in customers.iter_rows(named=True):
        assert row["loyalty_tier"] == built_lake.state["customers"][row["__document_id"]].get("loyalty_tier")
    assert customers["loyalty_tier"].drop_nulls().len() > 0
    gold = built_lake.gold["customers"]
    assert gold["loyalty_tier"].drop_nulls().len() == customers["loyalty_tier"].drop_nulls().len()


def test_a_removed_field_stays_as_a_nullable_column(built_lake) -> None:
    customers = built_lake.silver["stg_mongo__customers"]
    assert "fax" in customers.columns
    removed = [row for row in customers.iter_rows(named=True) if "fax" not in built_lake.state["customers"][row["__document_id"]]]
    kept = [row for row in customers.iter_rows(named=True) if "fax" in built_lake.state["customers"][row["__document_id"]]]
    assert removed and kept
    assert all(row["fax"] is None for row in removed) and all(row["fax"] is not None for row in kept)


def test_a_type_change_is_rescued_never_truncated(built_lake) -> None:
    customers = built_lake.silver["stg_mongo__customers"]
    assert customers.schema["zip_code"] == pl.Int64
    strings = 0
    for row in customers.iter_rows(named=True):
        source = built_lake.state["customers"][row["__document_id"]]["zip_code"]
        if isinstance(source, str):
            strings += 1
            assert row["zip_code"] is None
            assert json.loads(row["__rescued_data"])["zip_code"] == {"type": "string", "value": source}
        else:
            assert row["zip_code"] == source and "zip_code" not in json.loads(row["__rescued_data"] or "{}")
    assert strings > 0


def test_a_new_nested_field_reaches_silver(built_lake) -> None:
    orders = built_lake.silver["stg_mongo__orders"]
    with_geo = 0
    for row in orders.iter_rows(named=True):
        source = built_lake.state["orders"][row["__document_id"]]["shipping"]
        shipping = json.loads(row["shipping"])
        assert ("geo" in shipping["address"]) == ("geo" in source["address"])
        with_geo += "geo" in shipping["address"]
    assert with_geo > 0
