"""``spark-jobs scaffold``: names, the generated files, the sources edit, refusals, and one real dbt build.

Every test but the last reads a real bronze table (landed by ``BronzeFixtureWriter`` in
bronze_writer's schema, on a local directory and on the object store) and writes into a copy
of the project's dbt directory; no Spark. The last one builds the scaffolded models with the
real dbt on Spark and reads the current state back.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
import pyarrow as pa
import pytest
import yaml
from bson import Decimal128, ObjectId
from deltalake import write_deltalake
from typer.testing import CliRunner, Result

from data_generator import BronzeFixtureWriter, ChangeEventEncoder, Delete, Insert, Update
from lakehouse_common.lifecycle import ExitCode
from local_stack.paths import PROJECT_ROOT
from spark_jobs.cli import app
from spark_jobs.dbt_runner import DbtRunner
from spark_jobs.scaffold import (
    Namespace,
    ScaffoldRefused,
    add_source_table,
    current_state_model,
    dbt_identifier,
    history_model,
    jinja_literal,
    lake_path,
    models_yml,
    source_entry,
    source_table_name,
)
from spark_jobs.session import SparkSettings
from spark_jobs.settings import DbtSettings, SparkJobsSettings

HAND_WRITTEN = PROJECT_ROOT / "dbt" / "models" / "staging" / "mongo"
STAGING = Path("models") / "staging" / "mongo"
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _tickets(count: int) -> list[dict[str, Any]]:
    return [
        {
            "_id": ObjectId(f"6800000000000000000000{number:02x}"),
            "subject": f"ticket {number}",
            "priority": number % 4,
            "score": number / 2,
            "open": number % 3 != 0,
            "opened_at": START + timedelta(minutes=number),
            "tags": ["billing"] if number % 2 else [],
            "requester": {"email": f"user{number}@example.com"},
            "amount": Decimal128(f"{number}.50"),
        }
        for number in range(count)
    ]


def land(root: str, namespace: Namespace, operations: list[Any], storage_options: dict[str, str] | None = None) -> None:
    encoder = ChangeEventEncoder(namespace.database)
    BronzeFixtureWriter(root, storage_options=storage_options).write([encoder.event(operation) for operation in operations])


def land_inserts(root: str, namespace: Namespace, count: int = 3, storage_options: dict[str, str] | None = None) -> None:
    inserts = [Insert(namespace.collection, ticket, START + timedelta(seconds=n)) for n, ticket in enumerate(_tickets(count))]
    land(root, namespace, inserts, storage_options)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's dbt directory, which the scaffold may change."""
    copy = tmp_path / "dbt"
    shutil.copytree(PROJECT_ROOT / "dbt", copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return copy


def scaffold(project: Path, root: str, *arguments: str, options: dict[str, str] | None = None) -> Result:
    env = {"SPARK_JOBS_LAKE_ROOT": root, "SPARK_JOBS_STORAGE_OPTIONS": json.dumps(options or {})}
    return CliRunner().invoke(app, ["scaffold", *arguments, "--project-dir", str(project)], env=env)


def test_names_are_dbt_identifiers_mapped_deterministically() -> None:
    assert dbt_identifier("tickets") == "tickets" and dbt_identifier("ad_spend") == "ad_spend"
    odd = ["Support Tickets", "support tickets", "support.tickets", "заказы", "товары", "2024", "Tickets", "a-b"]
    mapped = [dbt_identifier(name) for name in odd]
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in mapped), mapped
    assert len(set(mapped)) == len(odd), "names that differ map apart"
    assert mapped == [dbt_identifier(name) for name in odd], "the mapping is deterministic"
    assert dbt_identifier("support tickets").startswith("support_tickets_"), "readable, then the hash"
    assert source_table_name(Namespace("shop", "tickets"), "shop") == "tickets"
    assert source_table_name(Namespace("crm", "tickets"), "shop") == "crm__tickets"
    assert Namespace.parse("shop.order.items") == Namespace("shop", "order.items")
    for bad in ("tickets", ".tickets", "shop."):
        with pytest.raises(ScaffoldRefused) as refused:
            Namespace.parse(bad)
        assert refused.value.exit_code == ExitCode.BAD_CONFIGURATION


def test_names_holding_jinja_delimiters_render_back_as_written() -> None:
    """dbt renders yml values with Jinja: a collection named ``{{ x }}`` must not become a template."""
    environment = jinja2.Environment()
    for name in ("tickets", "{{ tickets }}", "{% if %}", "a{#b", "100% {done}"):
        assert environment.from_string(jinja_literal(name)).render() == name
    entry = source_entry(Namespace("crm", "{{ x }}"), "crm__x", "shop")
    assert environment.from_string(entry["meta"]["mongo_collection"]).render() == "{{ x }}"


def test_the_generated_tests_and_envelope_columns_are_the_hand_written_models() -> None:
    hand_written = {model["name"]: model for model in yaml.safe_load((HAND_WRITTEN / "_mongo__models.yml").read_text())["models"]}
    collections = [name.removeprefix("stg_mongo__") for name in hand_written if not name.endswith("_history")]
    assert len(collections) == 7
    for collection in collections:
        generated = yaml.safe_load(models_yml(Namespace("shop", collection), collection, {}))["models"]
        assert [model["name"] for model in generated] == [f"stg_mongo__{collection}", f"stg_mongo__{collection}_history"]
        for model in generated:
            expected = hand_written[model["name"]]
            assert model["data_tests"] == expected["data_tests"], model["name"]
            assert model["columns"] == expected["columns"], model["name"]


def test_the_model_files_are_the_hand_written_ones() -> None:
    paths = sorted(HAND_WRITTEN.glob("stg_mongo__*.sql"))
    assert len(paths) == 14
    for path in paths:
        table = path.stem.removeprefix("stg_mongo__").removesuffix("_history")
        expected = history_model(table) if path.stem.endswith("_history") else current_state_model(table)
        assert path.read_text().strip() == expected.strip(), path.name


def test_scaffold_writes_thin_models_their_yml_and_one_source_entry(project: Path, lake: Any) -> None:
    namespace = Namespace("shop", "tickets")
    land_inserts(lake.root, namespace, storage_options=lake.storage_options)
    sources = project / STAGING / "__sources.yml"
    before = sources.read_text()
    result = scaffold(project, lake.root, "shop.tickets", options=lake.storage_options)
    assert result.exit_code == ExitCode.OK, result.output

    staging = project / STAGING
    assert (staging / "stg_mongo__tickets_history.sql").read_text() == "{{ mongo_history(source('mongo', 'tickets')) }}\n"
    assert (staging / "stg_mongo__tickets.sql").read_text() == "{{ mongo_current_state(ref('stg_mongo__tickets_history')) }}\n"
    models = {model["name"]: model for model in yaml.safe_load((staging / "_mongo__tickets__models.yml").read_text())["models"]}
    assert set(models) == {"stg_mongo__tickets", "stg_mongo__tickets_history"}
    for model in models.values():
        fields = {column["name"]: column["description"] for column in model["columns"] if not column["name"].startswith("__")}
        assert list(fields) == ["_id", "subject", "priority", "score", "open", "opened_at", "tags", "requester", "amount"]
        for name, family in [("_id", "objectId"), ("priority", "long"), ("opened_at", "date"), ("amount", "decimal")]:
            assert f"BSON type family {family}" in fields[name]
        assert "MongoDB's shop.tickets collection" in model["description"]

    after = sources.read_text()
    changes = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False).get_opcodes()
    assert [tag for tag, *_ in changes if tag != "equal"] == ["insert"], "one block of lines added, nothing else touched"
    mongo = next(source for source in yaml.safe_load(after)["sources"] if source["name"] == "mongo")
    entry = mongo["tables"][-1]
    assert entry["name"] == "tickets" and "lake_path" not in entry["meta"], "a default-database table follows the var"
    assert (entry["meta"]["mongo_database"], entry["meta"]["mongo_collection"]) == ("shop", "tickets")

    drifted = {**_tickets(1)[0], "_id": ObjectId(), "channel": "email"}
    land(lake.root, namespace, [Insert("tickets", drifted, START + timedelta(hours=1))], lake.storage_options)
    again = scaffold(project, lake.root, "shop.tickets", "--force", options=lake.storage_options)
    assert again.exit_code == ExitCode.OK, again.output
    rewritten = yaml.safe_load((staging / "_mongo__tickets__models.yml").read_text())["models"][0]
    assert rewritten["columns"][-1]["name"] == "channel", "--force rewrites the yml from the table's columns now"
    assert sources.read_text() == after, "the source entry is there already: the file is left alone"


def test_the_sources_edit_keeps_comments_and_layout() -> None:
    text = (HAND_WRITTEN / "__sources.yml").read_text()
    namespace = Namespace("crm", "support tickets")
    edited = add_source_table(text, source_entry(namespace, "crm__support", "shop"))
    head, tail = text.split("\n\n  - name: lakehouse")
    fragment = (
        "      - name: crm__support\n"
        "        description: MongoDB's crm.support tickets collection (added by spark-jobs scaffold).\n"
        "        meta:\n"
        "          mongo_database: crm\n"
        "          mongo_collection: support tickets\n"
        f"          lake_path: {lake_path(namespace)}"
    )
    assert edited == f"{head}\n{fragment}\n\n  - name: lakehouse{tail}", (
        "after the mongo source's last table, nothing else changed"
    )

    commented = "version: 2\n# top\nsources:\n  - name: mongo  # the source\n    tables:\n      - name: a\n        # about a\n      # last\n"
    edited = add_source_table(commented, {"name": "b"})
    assert edited == commented + "      - name: b\n", "comments inside the list stay with what they follow"
    assert yaml.safe_load(edited)["sources"][0]["tables"] == [{"name": "a"}, {"name": "b"}]

    for layout in ("version: 2\nsources:\n  - name: mongo\n    tables: []\n", "sources: [{name: mongo, tables: [{name: a}]}]\n"):
        with pytest.raises(ScaffoldRefused, match="add it by hand") as refused:
            add_source_table(layout, {"name": "b"})
        assert refused.value.exit_code == ExitCode.BAD_CONFIGURATION


def test_another_database_and_odd_names_get_their_lake_path(project: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    namespace = Namespace("crm", "support.tickets")
    land_inserts(root, namespace)
    result = scaffold(project, root, "crm.support.tickets")
    assert result.exit_code == ExitCode.OK, result.output
    table = f"crm__{dbt_identifier('support.tickets')}"
    assert (project / STAGING / f"stg_mongo__{table}.sql").exists()
    mongo = next(
        source
        for source in yaml.safe_load((project / STAGING / "__sources.yml").read_text())["sources"]
        if source["name"] == "mongo"
    )
    entry = mongo["tables"][-1]
    assert entry["name"] == table and entry["meta"]["lake_path"] == lake_path(namespace) == "bronze/crm/support.tickets"
    assert (
        source_entry(Namespace("shop", "Tickets"), dbt_identifier("Tickets"), "shop")["meta"]["lake_path"]
        == "bronze/shop/Tickets"
    )


def test_dry_run_prints_everything_and_writes_nothing(project: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    land_inserts(root, Namespace("shop", "tickets"))
    before = {path: path.read_text() for path in project.rglob("*") if path.is_file()}
    result = scaffold(project, root, "shop.tickets", "--dry-run")
    assert result.exit_code == ExitCode.OK, result.output
    assert {path: path.read_text() for path in project.rglob("*") if path.is_file()} == before
    assert "--- create " in result.output and "stg_mongo__tickets_history.sql" in result.output
    assert "+      - name: tickets" in result.output, "the sources edit is shown as a diff"


def test_refusals_name_the_problem_and_exit_with_the_enumerations_codes(project: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    missing = scaffold(project, root, "shop.tickets")
    assert missing.exit_code == ExitCode.FAILED
    assert f"{root}/bronze/shop/tickets" in missing.output and "no bronze table" in missing.output

    assert scaffold(project, root, "tickets").exit_code == ExitCode.BAD_CONFIGURATION

    land_inserts(root, Namespace("shop", "orders"))
    hand_written = scaffold(project, root, "shop.orders", "--force")
    assert hand_written.exit_code == ExitCode.BAD_CONFIGURATION
    assert "stg_mongo__orders is described in" in hand_written.output

    land_inserts(root, Namespace("shop", "tickets"))
    (project / "models" / "elsewhere").mkdir()
    (project / "models" / "elsewhere" / "stg_mongo__tickets.sql").write_text("select 1")
    collision = scaffold(project, root, "shop.tickets")
    assert collision.exit_code == ExitCode.BAD_CONFIGURATION and "elsewhere/stg_mongo__tickets.sql" in collision.output
    (project / "models" / "elsewhere" / "stg_mongo__tickets.sql").unlink()

    assert scaffold(project, root, "shop.tickets").exit_code == ExitCode.OK
    existing = scaffold(project, root, "shop.tickets")
    assert existing.exit_code == ExitCode.BAD_CONFIGURATION and "--force" in existing.output

    sources = project / STAGING / "__sources.yml"
    sources.write_text(
        sources.read_text().replace("      - name: tickets\n", "      - name: tickets_old\n        identifier: crm__tickets\n", 1)
    )
    land_inserts(root, Namespace("crm", "tickets"))
    taken = scaffold(project, root, "crm.tickets")
    assert taken.exit_code == ExitCode.BAD_CONFIGURATION and "tickets_old" in taken.output


def test_a_table_that_is_not_bronze_is_refused(project: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    write_deltalake(f"{root}/bronze/shop/tickets", pa.table({"n": [1]}))
    result = scaffold(project, root, "shop.tickets")
    assert result.exit_code == ExitCode.FAILED and "not a bronze table" in result.output


@pytest.mark.timeout(2400)
def test_the_scaffolded_models_pass_dbt_build_at_once(
    project: Path, tmp_path: Path, small_spark: Callable[..., SparkSettings]
) -> None:
    """A new collection in another database, with a name that is no identifier: scaffold, build, read."""
    root = str(tmp_path / "lake")
    namespace = Namespace("crm", "support tickets")
    tickets = _tickets(12)
    at = START + timedelta(hours=1)
    operations: list[Any] = [Insert(namespace.collection, ticket, at + timedelta(seconds=n)) for n, ticket in enumerate(tickets)]
    state = {ticket["_id"]: ticket for ticket in tickets}
    for n, ticket in enumerate(tickets[:10]):
        changed = {**state[ticket["_id"]], "priority": 9, "open": False}
        operations.append(
            Update(
                namespace.collection, ticket["_id"], changed, at + timedelta(minutes=1, seconds=n), {"priority": 9, "open": False}
            )
        )
        state[ticket["_id"]] = changed
    for n, ticket in enumerate(tickets[-3:]):
        operations.append(Delete(namespace.collection, ticket["_id"], at + timedelta(minutes=2, seconds=n)))
        del state[ticket["_id"]]
    land(root, namespace, operations)

    assert scaffold(project, root, str(namespace)).exit_code == ExitCode.OK
    table = source_table_name(namespace, "shop")
    work = tmp_path / "work"
    settings = SparkJobsSettings(
        lake_root=root,
        spark=small_spark(work, master="local[2]", app_name="scaffold-test"),
        dbt=DbtSettings(
            project_dir=project,
            profiles_dir=project,
            target_path=work / "target",
            log_path=work / "logs",
            spark_conf_dir=work / "conf",
            commands=[f"build --select stg_mongo__{table}_history stg_mongo__{table}"],
        ),
    )
    started = time.monotonic()
    (result,) = DbtRunner(settings).run_all()
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, f"dbt build failed after {elapsed:.0f} s: {result.summary}"
    assert result.summary is not None
    assert result.summary["nodes"]["model"] == {"success": 2} and set(result.summary["nodes"]["test"]) == {"pass"}

    current = pl.read_delta(f"{root}/silver/stg_mongo__{table}")
    assert current.height == len(state) == 9
    expected = {json.dumps({"$oid": str(key)}, separators=(",", ":")): document for key, document in state.items()}
    assert set(current["__document_id"]) == set(expected)
    assert dict(zip(current["subject"], current["priority"], strict=True)) == {
        doc["subject"]: doc["priority"] for doc in state.values()
    }
    history = pl.read_delta(f"{root}/silver/stg_mongo__{table}_history")
    assert history.height == len(operations)
