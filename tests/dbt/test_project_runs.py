"""The runner with the real dbt: output streamed as it is printed, failures propagated, docs generated."""

from __future__ import annotations

import json
import logging
import time


def test_dbt_lines_are_logged_while_dbt_runs(built_lake, record_property) -> None:
    (second,) = built_lake.second_run
    for name, (run,) in (("staging_run", built_lake.first_run), ("build", built_lake.second_run)):
        record_property(f"dbt_{name}_seconds", run.elapsed_seconds)  # in the JUnit report, per lake
    records = [record for command, _, record in built_lake.dbt_log if command == "build"]
    messages = [record.getMessage() for record in records]
    assert any("OK created sql incremental model silver.stg_mongo__orders " in message for message in messages)
    assert any(message.startswith("Finished running") for message in messages)
    started = records[0].created
    finished = records[-1].created
    # Lines arrive spread over the run, not in one burst at its end.
    assert finished - started > 0.5 * second.elapsed_seconds
    models = [record for record in records if getattr(record, "dbt_node", "").startswith("model.")]
    assert models and all(record.levelno == logging.INFO for record in models)
    assert time.time() > finished


def test_a_failing_build_returns_dbts_failure_and_names_the_test(built_lake) -> None:
    failing, docs = built_lake.third_run
    assert failing.exit_code == 1
    problems = {problem["unique_id"].split(".")[2]: problem for problem in failing.summary["problems"]}
    assert "accepted_values_int_orders_status__placed__paid__shipped__delivered__cancelled__refunded" in problems
    errors = [
        record
        for command, _, record in built_lake.dbt_log
        if command.startswith("build --select") and record.levelno >= logging.ERROR
    ]
    assert errors, "the failure reached the log at ERROR"
    assert docs.exit_code == 0, "keep_going: docs are generated after a failed build"


def test_docs_generate_describes_silver_and_gold(built_lake) -> None:
    catalog = json.loads((built_lake.work / "target" / "catalog.json").read_text())
    nodes = catalog["nodes"]
    assert "model.mongo_lakehouse.daily_revenue" in nodes
    customers = nodes["model.mongo_lakehouse.stg_mongo__customers"]["columns"]
    assert {"loyalty_tier", "fax", "zip_code", "__rescued_data"} <= {name.lower() for name in customers}
    assert "source.mongo_lakehouse.mongo.orders" in catalog["sources"]
