"""OPTIMIZE (with Z-ORDER where configured) and VACUUM over bronze, silver and gold, by path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from data_generator import BronzeFixtureWriter, ChangeEventEncoder, Insert
from spark_jobs.lake_tables import discover_tables
from spark_jobs.maintenance import maintain
from spark_jobs.settings import MaintenanceSettings

AT = datetime(2025, 3, 1, tzinfo=UTC)


def _data_files(table: Path) -> set[str]:
    return {str(path) for path in table.rglob("*.parquet")}


def test_compaction_and_vacuum_keep_the_data_and_drop_the_small_files(spark, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    writer = BronzeFixtureWriter(lake)
    encoder = ChangeEventEncoder("shop")
    for batch in range(4):
        documents = [{"_id": f"P{batch}-{index}", "price": float(index)} for index in range(25)]
        writer.write(encoder.events(Insert("products", document, AT) for document in documents), AT + timedelta(minutes=batch))
    silver = lake / "silver" / "stg_mongo__products"
    for batch in range(3):
        spark.createDataFrame([(f"{batch}", batch)], "__document_id STRING, price BIGINT").write.format("delta").mode(
            "append"
        ).save(str(silver))
    spark.createDataFrame([("2025-03-01", 1.0)], "day STRING, revenue DOUBLE").write.format("delta").save(
        str(lake / "gold" / "daily_revenue")
    )

    tables = {table.key: table for table in discover_tables(str(lake), ["bronze", "silver", "gold"])}
    assert set(tables) == {"bronze/_ingest_log", "bronze/shop/products", "silver/stg_mongo__products", "gold/daily_revenue"}
    bronze = lake / "bronze" / "shop" / "products"
    before = pl.read_delta(str(bronze)).sort("__event_id")
    small_files = _data_files(bronze)
    assert len(small_files) >= 4

    reports = {report["table"]: report for report in maintain(spark, str(lake), MaintenanceSettings(retention_hours=0))}
    assert all("error" not in report for report in reports.values()), reports
    assert reports["bronze/shop/products"]["optimize"]["zorder_by"] == ["__ingested_at"]
    assert reports["silver/stg_mongo__products"]["optimize"]["zorder_by"] == ["__document_id"]
    assert reports["gold/daily_revenue"]["optimize"]["zorder_by"] == []
    assert reports["bronze/shop/products"]["optimize"]["files_removed"] == len(small_files)
    assert reports["bronze/shop/products"]["vacuum"]["files_deleted"] == len(small_files)
    assert not small_files & _data_files(bronze), "vacuum deleted the compacted files"
    assert len(_data_files(bronze)) == 1
    assert pl.read_delta(str(bronze)).sort("__event_id").equals(before)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{bronze}`").collect()
    optimize = next(row for row in history if row["operation"] == "OPTIMIZE")
    assert optimize["operationParameters"]["zOrderBy"] == '["__ingested_at"]'
    assert sorted(row["price"] for row in spark.read.format("delta").load(str(silver)).collect()) == [0, 1, 2]


def test_only_the_chosen_layers_are_touched(spark, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for batch in range(2):
        spark.createDataFrame([(batch,)], "x INT").write.format("delta").mode("append").save(str(lake / "gold" / "t"))
    reports = maintain(spark, str(lake), MaintenanceSettings(layers=["silver"]), clean=False)
    assert reports == []
    (report,) = maintain(spark, str(lake), MaintenanceSettings(layers=["gold"]), clean=False)
    assert report["optimize"]["files_removed"] == 2 and "vacuum" not in report
