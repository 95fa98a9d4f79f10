"""The local Spark cluster: a standalone master and worker from pyspark's own classes, and the
Thrift Server, which applies the project's session settings to every connection and reaches the
object-store lake through S3A."""

from __future__ import annotations

import uuid

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from pyhive import hive

from local_stack.object_store import ObjectStore
from local_stack.spark_cluster import SparkCluster, _alive_workers


def _query(cluster: SparkCluster, statement: str) -> list[tuple[object, ...]]:
    connection = hive.connect(host=cluster.thrift_host, port=cluster.thrift_port, username="test")
    try:
        cursor = connection.cursor()
        cursor.execute(statement)
        return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def test_every_connection_gets_the_session_settings(spark_cluster: SparkCluster) -> None:
    assert _alive_workers(spark_cluster) == 1
    for _connection in range(2):  # each statement below opens a new Thrift session
        assert _query(spark_cluster, "set spark.databricks.delta.merge.materializeSource") == [
            ("spark.databricks.delta.merge.materializeSource", "all")
        ]
    # A session's own SET stays in that session.
    connection = hive.connect(host=spark_cluster.thrift_host, port=spark_cluster.thrift_port, username="test")
    try:
        cursor = connection.cursor()
        cursor.execute("set spark.databricks.delta.merge.materializeSource = auto")
    finally:
        connection.close()
    assert _query(spark_cluster, "set spark.databricks.delta.merge.materializeSource")[0][1] == "all"


def test_the_cluster_reads_and_writes_delta_on_the_object_store(spark_cluster: SparkCluster, object_store: ObjectStore) -> None:
    root = object_store.lake_root(f"tests/{uuid.uuid4().hex}")
    options = object_store.storage_options()
    write_deltalake(f"{root}/bronze", pa.table({"n": list(range(100))}), storage_options=options)
    assert _query(spark_cluster, f"select count(*), sum(n) from delta.`{root}/bronze`") == [(100, 4950)]
    _query(spark_cluster, f"create table delta.`{root}/silver` using delta as select n * 2 as n from delta.`{root}/bronze` where n < 10")
    assert sorted(DeltaTable(f"{root}/silver", storage_options=options).to_pyarrow_table()["n"].to_pylist()) == list(range(0, 20, 2))
