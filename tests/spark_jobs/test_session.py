"""Spark with Delta reads what deltalake wrote, including its app transactions and commit metadata."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from spark_jobs.session import SparkSettings, spark_conf, write_spark_defaults


def test_spark_reads_a_deltalake_table_with_its_transaction_versions_and_metadata(spark, tmp_path: Path) -> None:
    table_path = str(tmp_path / "bronze_orders")
    rows = pa.table({"event_id": ["a1", "a2", "a3"], "amount": [10.5, 20.0, 7.25]})
    offsets = {"topic": "cdc.shop.orders", "partition": 0, "first": 0, "last": 2}
    write_deltalake(
        table_path,
        rows,
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id="cdc.shop.orders-0", version=2)],
            custom_metadata={"lakehouse.offsets": json.dumps(offsets)},
        ),
    )

    frame = spark.read.format("delta").load(table_path)
    assert sorted((row.event_id, row.amount) for row in frame.collect()) == [("a1", 10.5), ("a2", 20.0), ("a3", 7.25)]

    table = DeltaTable(table_path)
    assert table.transaction_version("cdc.shop.orders-0") == 2
    assert json.loads(table.history(1)[0]["lakehouse.offsets"]) == offsets

    # Spark sees the same commit: the txn action and the commitInfo metadata in the Delta log.
    log = spark.read.json(f"{table_path}/_delta_log/00000000000000000000.json")
    txn = [row.txn for row in log.where("txn IS NOT NULL").select("txn").collect()]
    assert [(action.appId, action.version) for action in txn] == [("cdc.shop.orders-0", 2)]
    commit_info = log.where("commitInfo IS NOT NULL").select("commitInfo.`lakehouse.offsets`").first()[0]
    assert json.loads(commit_info) == offsets
    history = spark.sql(f"DESCRIBE HISTORY delta.`{table_path}`").select("version", "operation").collect()
    assert [(row.version, row.operation) for row in history] == [(0, "WRITE")]


def test_spark_writes_delta_tables_deltalake_can_read(spark, tmp_path: Path) -> None:
    table_path = str(tmp_path / "silver_customers")
    spark.createDataFrame([(1, "Ada"), (2, "Grace")], "id INT, name STRING").write.format("delta").save(table_path)
    assert sorted(DeltaTable(table_path).to_pyarrow_table().to_pylist(), key=lambda row: row["id"]) == [
        {"id": 1, "name": "Ada"},
        {"id": 2, "name": "Grace"},
    ]


def test_child_processes_get_the_same_configuration(tmp_path: Path) -> None:
    settings = SparkSettings(master="local[2]", warehouse_dir=tmp_path / "wh", metastore_dir=tmp_path / "ms")
    defaults = write_spark_defaults(settings, tmp_path / "conf").read_text()
    conf = spark_conf(settings)
    assert "io.delta.sql.DeltaSparkSessionExtension" in defaults
    assert all(jar.endswith(".jar") for jar in conf["spark.jars"].split(","))
    assert f"spark.sql.warehouse.dir {(tmp_path / 'wh').resolve()}" in defaults


def test_spark_reads_and_writes_the_object_store_lake_by_the_uris_deltalake_uses(spark, object_store) -> None:
    root = object_store.lake_root(f"tests/{uuid.uuid4().hex}")
    options = object_store.storage_options()
    write_deltalake(f"{root}/bronze", pa.table({"n": [1, 2, 3]}), storage_options=options)
    assert spark.read.format("delta").load(f"{root}/bronze").count() == 3
    spark.createDataFrame([(1,), (2,)], "n INT").write.format("delta").save(f"{root}/silver")
    assert sorted(DeltaTable(f"{root}/silver", storage_options=options).to_pyarrow_table()["n"].to_pylist()) == [1, 2]
    # The keys reach Spark's Hadoop configuration, never its SparkConf (which pyspark puts on a command line).
    assert spark.sparkContext.getConf().get("spark.hadoop.fs.s3a.secret.key") is None
    assert spark.sparkContext._jsc.hadoopConfiguration().get("fs.s3a.secret.key") == object_store.secret_access_key


def test_an_object_store_lake_adds_the_connector_and_s3a_settings(tmp_path: Path) -> None:
    settings = SparkSettings(warehouse_dir=tmp_path / "wh", metastore_dir=tmp_path / "ms")
    assert "spark.driver.extraClassPath" not in spark_conf(settings)
    conf = spark_conf(settings, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert "hadoop-aws-" in conf["spark.driver.extraClassPath"] and conf["spark.executor.extraClassPath"] == conf["spark.driver.extraClassPath"]
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:1"
    assert conf["spark.databricks.delta.merge.materializeSource"] == "all"
    defaults = write_spark_defaults(settings, tmp_path / "conf", {"AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "k"})
    assert defaults.stat().st_mode & 0o077 == 0, "spark-defaults.conf may hold the store's keys: owner-only"
