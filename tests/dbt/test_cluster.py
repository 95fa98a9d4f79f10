"""dbt's ``cluster`` target: ``dbt build`` through the Spark Thrift Server on a standalone cluster,
against the object-store lake, a full build and then an incremental one; silver equals the
generator's MongoDB state after each. The durations are recorded in the JUnit report
(``dbt_cluster_full_seconds``, ``dbt_cluster_incremental_seconds``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bson import json_util

from data_generator import COLLECTIONS, BronzeFixtureWriter, ChangeEventEncoder, GeneratorConfig, SalesMarketingGenerator
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS
from local_stack.object_store import ObjectStore
from local_stack.spark_cluster import SparkCluster
from spark_jobs.dbt_runner import DbtRunner
from spark_jobs.settings import DbtSettings, SparkJobsSettings

CONFIG = GeneratorConfig(seed=5, scale=0.05, history_days=10, drift_every=400)


def document_id(value: object) -> str:
    """``__document_id``: the _id as compact relaxed Extended JSON."""
    return json_util.dumps(value, json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))


def _silver_ids(root: str, options: dict[str, str]) -> dict[str, set[str]]:
    return {
        name: set(pl.read_delta(f"{root}/silver/stg_mongo__{name}", storage_options=options)["__document_id"].to_list())
        for name in COLLECTIONS
    }


@pytest.mark.timeout(3600)  # two whole dbt builds through the Thrift Server
def test_dbt_builds_silver_and_gold_on_the_cluster_full_then_incremental(
    spark_cluster: SparkCluster, object_store: ObjectStore, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    root, options = object_store.lake_root(f"dbt-cluster-{uuid.uuid4().hex[:8]}"), object_store.storage_options()
    settings = SparkJobsSettings(
        lake_root=root,
        storage_options=options,
        dbt=DbtSettings(
            target="cluster",
            env=spark_cluster.dbt_environment(),
            target_path=tmp_path / "target",
            log_path=tmp_path / "logs",
            spark_conf_dir=tmp_path / "conf",
            threads=4,
            commands=["build"],
        ),
    )
    generator = SalesMarketingGenerator(CONFIG)
    encoder = ChangeEventEncoder("shop")
    writer = BronzeFixtureWriter(root, storage_options=options)
    writer.write(list(encoder.snapshot(generator.initial_load())), datetime.now(UTC) - timedelta(hours=2))
    writer.write(list(encoder.events(generator.changes(150))), datetime.now(UTC) - timedelta(hours=1))

    def expected() -> dict[str, set[str]]:
        return {name: {document_id(key) for key in documents} for name, documents in generator.state.items()}

    [full] = DbtRunner(settings).run_all()
    assert full.ok, "the full build on the cluster failed: see the dbt log records"
    assert _silver_ids(root, options) == expected()

    writer.write(list(encoder.events(generator.changes(150))), datetime.now(UTC))
    [incremental] = DbtRunner(settings).run_all()
    assert incremental.ok, "the incremental build on the cluster failed: see the dbt log records"
    assert _silver_ids(root, options) == expected()
    gold = pl.read_delta(f"{root}/gold/orders", storage_options=options)
    assert gold.height == len(generator.state["orders"])
    record_property("dbt_cluster_full_seconds", full.elapsed_seconds)
    record_property("dbt_cluster_incremental_seconds", incremental.elapsed_seconds)
