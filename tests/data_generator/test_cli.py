"""``lakehouse-generator``: into MongoDB (load, run) and without it (events, bronze)."""

from __future__ import annotations

import json
from pathlib import Path

import pymongo
from typer.testing import CliRunner

from data_generator.cli import app
from lakehouse_common.contract import ValueFormat, decode_value
from local_stack.mongo import MongoStandIn

SIZE = ["--seed", "5", "--scale", "0.05", "--history-days", "5", "--drift-every", "50"]


def test_load_then_run_continues_the_same_database(mongo_standin: MongoStandIn) -> None:
    runner = CliRunner()
    loaded = runner.invoke(app, ["load", "--uri", mongo_standin.uri, "--database", "cli_gen", "--drop", *SIZE])
    assert loaded.exit_code == 0, loaded.output
    again = runner.invoke(app, ["load", "--uri", mongo_standin.uri, "--database", "cli_gen", *SIZE])
    assert again.exit_code == 1 and "already holds" in again.output
    ran = runner.invoke(app, ["run", "--uri", mongo_standin.uri, "--database", "cli_gen", "--rate", "0", "--limit", "100", *SIZE])
    assert ran.exit_code == 0, ran.output
    counts = json.loads(ran.output.strip().splitlines()[-1])
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_standin.uri)
    try:
        assert counts == {name: client["cli_gen"][name].count_documents({}) for name in counts}
    finally:
        client.drop_database("cli_gen")
        client.close()


def test_events_and_bronze_need_no_mongodb(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "events.jsonl"
    written = runner.invoke(app, ["events", "--out", str(out), "--changes", "200", *SIZE])
    assert written.exit_code == 0, written.output
    lines = out.read_bytes().splitlines()
    assert len(lines) == json.loads(written.output.strip().splitlines()[-1])["events"]
    first = decode_value(lines[0], ValueFormat.JSON)
    assert first["operationType"] == "snapshot" and "fullDocument" in first
    landed = runner.invoke(
        app, ["bronze", "--lake-root", str(tmp_path / "lake"), "--changes", "200", "--batch-size", "300", *SIZE]
    )
    assert landed.exit_code == 0, landed.output
    assert json.loads(landed.output.strip().splitlines()[-1])["events"] == len(lines), "the same seed gives the same stream"
    assert sorted(path.name for path in (tmp_path / "lake" / "bronze" / "shop").iterdir()) == sorted(
        ["ad_spend", "campaigns", "customers", "orders", "products", "social_engagement", "web_sessions"]
    )
