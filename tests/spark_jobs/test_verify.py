"""``spark-jobs verify``: the canonical form, the comparison, and the command against MongoDB and a silver table.

The command runs against the MongoDB stand-in (mongo-java-server, not a real MongoDB; and a
real replica set where Docker is) and a silver current-state table written here with
deltalake as dbt lays it out (``__document_id``, ``__full_document``, ``__is_deleted``), the
documents encoded by the native codec as the pipeline encodes them. No Spark is needed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymongo.database
import pytest
from bson import Decimal128, Int64, ObjectId, json_util
from bson.datetime_ms import DatetimeMS
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, to_relaxed_json
from lakehouse_common.lifecycle import ExitCode
from spark_jobs.cli import app
from spark_jobs.lake_tables import silver_current_state_uri, silver_history_uri
from spark_jobs.verify import (
    Side,
    compare,
    document_hash,
    documents_side,
    id_from_lake,
    id_of,
    lake_document_hash,
    silver_collections,
    silver_side,
)

WHEN = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def _lake_id(value: Any) -> str:
    """``__document_id`` as silver holds it: the _id as compact relaxed Extended JSON."""
    return json_util.dumps(value, json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))


# ---------------------------------------------------------------- the canonical form


def test_key_order_does_not_change_the_hash_at_any_depth() -> None:
    first = {"_id": 1, "a": {"x": 1, "y": [1, {"p": 1, "q": 2}]}, "b": "text"}
    second = {"b": "text", "a": {"y": [1, {"q": 2, "p": 1}], "x": 1}, "_id": 1}
    assert document_hash(first) == document_hash(second)
    assert document_hash(first) != document_hash({**first, "a": {"x": 1, "y": [{"p": 1, "q": 2}, 1]}})  # arrays keep order


def test_an_integral_double_equals_the_integer_and_other_numbers_stay_apart() -> None:
    assert document_hash({"_id": 1, "v": 1, "n": [Int64(2)]}) == lake_document_hash('{"_id":1.0,"v":1.0,"n":[2.0]}')
    assert document_hash({"_id": 1, "v": 1.5}) == lake_document_hash('{"_id":1,"v":1.5}')
    assert document_hash({"_id": 1, "v": 1}) != document_hash({"_id": 1, "v": 2})
    assert document_hash({"_id": 1, "v": 1}) != document_hash({"_id": 1, "v": "1"})
    assert document_hash({"v": Decimal128("1.10")}) != document_hash({"v": Decimal128("1.1")})  # a decimal's digits are content


def test_objectids_dates_and_decimals_hash_the_same_from_mongodb_and_from_the_lake() -> None:
    oid = ObjectId("6700000000000000000000aa")
    document = {
        "_id": oid,
        "at": WHEN,  # no milliseconds: pymongo writes "...30:00Z", the native codec "...30:00.000Z"
        "naive": datetime(2025, 3, 1, 12, 30, 0, 123000),  # pymongo's default decoding: naive UTC
        "ancient": DatetimeMS(-62_135_596_800_001),  # before year 1: kept as milliseconds
        "price": Decimal128(Decimal("19.99")),
        "tags": ["a", {"nested": oid}],
    }
    codec_text = to_relaxed_json(document).decode()
    assert '"$date":"2025-03-01T12:30:00.000Z"' in codec_text
    pymongo_text = json_util.dumps(document, json_options=EXTENDED_JSON_OPTIONS)
    assert document_hash(document) == lake_document_hash(codec_text) == lake_document_hash(pymongo_text)
    assert document_hash(document) != document_hash({**document, "at": WHEN.replace(microsecond=1000)})
    assert document_hash(document) != document_hash({**document, "_id": str(oid)})  # an ObjectId is not its hex string
    assert id_of(oid) == id_from_lake(_lake_id(oid)) == '{"$oid":"6700000000000000000000aa"}'
    assert id_of("a") == id_from_lake('"a"') and id_of(7) == id_from_lake("7") != id_of("7")


# ---------------------------------------------------------------- the comparison


def test_compare_names_missing_extra_and_differing_documents_by_hash() -> None:
    mongo = documents_side([{"_id": 1, "v": 1}, {"_id": 2, "v": 1}, {"_id": 3, "v": 1}, {"_id": 4, "v": 1}])
    silver = Side()
    silver.add(id_of(1), document_hash({"v": 1, "_id": 1}))  # equal
    silver.add(id_of(2), document_hash({"_id": 2, "v": 2}))  # changed
    silver.add(id_of(3), None)  # no document image
    silver.add(id_of(9), document_hash({"_id": 9}))  # not in MongoDB
    diff = compare(mongo, silver)
    assert (diff.missing, diff.extra, diff.differing) == ([id_of(4)], [id_of(9)], [id_of(2), id_of(3)])
    assert diff.as_dict(examples=1) == {
        "ok": False,
        "mongo": 4,
        "silver": 4,
        "missing": 1,
        "extra": 1,
        "differing": 2,
        "mismatches": 4,
        "silver_table": True,
        "examples": {"missing": ["4"], "extra": ["9"], "differing": ["2"]},
    }
    assert compare(mongo, documents_side([{"_id": n, "v": 1} for n in (4, 3, 2, 1)])).ok


def test_an_id_held_by_two_silver_rows_differs_and_no_table_misses_everything() -> None:
    mongo = documents_side([{"_id": 1}, {"_id": 2}])
    silver = documents_side([{"_id": 1}, {"_id": 1}, {"_id": 2}])
    diff = compare(mongo, silver)
    assert diff.differing == [id_of(1)] and diff.rows == 3
    absent = compare(mongo, None)
    assert absent.missing == [id_of(1), id_of(2)] and not absent.table and absent.as_dict()["silver"] == 0


# ---------------------------------------------------------------- the command


def _mongo_documents() -> dict[str, list[dict[str, Any]]]:
    return {
        "orders": [
            {"_id": ObjectId(), "status": "paid", "total": Decimal128("10.50"), "at": WHEN, "lines": [{"sku": "a", "qty": 2}]}
            for _ in range(5)
        ],
        "customers": [{"_id": f"c{number}", "name": f"customer {number}", "score": 1.0, "since": WHEN} for number in range(3)],
    }


def _silver_row(document: dict[str, Any], deleted: bool = False) -> dict[str, Any]:
    return {
        "__document_id": _lake_id(document["_id"]),
        "__full_document": to_relaxed_json(document).decode(),
        "__is_deleted": deleted,
    }


def _write_silver(root: str, collection: str, rows: list[dict[str, Any]], mode: str = "overwrite") -> str:
    uri = silver_current_state_uri(root, collection)
    schema = pa.schema([("__document_id", pa.string()), ("__full_document", pa.string()), ("__is_deleted", pa.bool_())])
    write_deltalake(uri, pa.Table.from_pylist(rows, schema=schema), mode=mode)  # type: ignore[arg-type]
    return uri


@pytest.fixture
def pipeline(mongo_database: pymongo.database.Database, tmp_path: Path) -> tuple[pymongo.database.Database, str, dict]:
    """MongoDB holding the documents (read back as MongoDB stores them), and silver holding exactly them."""
    root = str(tmp_path / "lake")
    stored = {}
    for collection, documents in _mongo_documents().items():
        mongo_database[collection].insert_many(documents)
        stored[collection] = list(mongo_database[collection].find({}))
        _write_silver(root, collection, [_silver_row(document) for document in stored[collection]])
    # A document deleted in flag mode: in silver's table, not a document.
    _write_silver(root, "orders", [_silver_row({"_id": ObjectId(), "status": "gone"}, deleted=True)], mode="append")
    # History tables are not current state: never compared.
    write_deltalake(silver_history_uri(root, "orders"), pa.table({"__document_id": ["x"]}))
    return mongo_database, root, stored


def _verify(database: pymongo.database.Database, root: str, *args: str) -> Any:
    uri = database.client.address
    env = {"SPARK_JOBS_VERIFY__MONGO_URI": f"mongodb://{uri[0]}:{uri[1]}/?directConnection=true", "SPARK_JOBS_LAKE_ROOT": root}
    return CliRunner().invoke(app, ["verify", "--database", database.name, *args], env=env)


def test_verify_passes_when_silver_holds_exactly_mongodbs_documents(pipeline) -> None:
    database, root, _stored = pipeline
    assert silver_collections(root) == ["customers", "orders"]
    result = _verify(database, root)
    assert result.exit_code == ExitCode.OK, result.output
    assert "silver holds exactly MongoDB's documents" in result.output
    report = json.loads(_verify(database, root, "--json").stdout)
    assert report["verified"] is True and report["database"] == database.name
    assert set(report["collections"]) == {"customers", "orders"}
    assert report["collections"]["orders"] == {
        "ok": True,
        "mongo": 5,
        "silver": 5,
        "missing": 0,
        "extra": 0,
        "differing": 0,
        "mismatches": 0,
        "silver_table": True,
        "examples": {"missing": [], "extra": [], "differing": []},
    }


def test_one_silver_row_changed_by_hand_fails_and_the_report_names_it(pipeline) -> None:
    database, root, stored = pipeline
    changed = stored["orders"][2]
    edited = to_relaxed_json({**changed, "status": "refunded"}).decode()
    DeltaTable(silver_current_state_uri(root, "orders")).update(
        updates={"__full_document": "'" + edited.replace("'", "''") + "'"},
        predicate=f"__document_id = '{_lake_id(changed['_id'])}'",
    )
    result = _verify(database, root)
    assert result.exit_code == ExitCode.DIFFERENCES_FOUND, result.output
    assert "DIFFERENT" in result.output and "silver differs from MongoDB" in result.output
    assert f"orders: 1 differing: {id_of(changed['_id'])}" in result.output
    report = json.loads(_verify(database, root, "--json").stdout)
    assert report["verified"] is False
    assert report["collections"]["orders"]["examples"]["differing"] == [id_of(changed["_id"])]
    assert report["collections"]["customers"]["ok"] is True


def test_a_missing_an_extra_and_an_imageless_row_are_each_named(pipeline) -> None:
    database, root, stored = pipeline
    kept, dropped = stored["customers"][:2], stored["customers"][2]
    extra = {"_id": "c-extra", "name": "nobody"}
    rows = [_silver_row(document) for document in [*kept, extra]]
    rows[0]["__full_document"] = None  # only updates without fullDocument arrived for it
    _write_silver(root, "customers", rows)
    result = _verify(database, root, "--json", "--collection", "customers")
    assert result.exit_code == ExitCode.DIFFERENCES_FOUND, result.output
    customers = json.loads(result.stdout)["collections"]["customers"]
    assert (customers["mongo"], customers["silver"]) == (3, 3)
    assert customers["examples"] == {"missing": [id_of(dropped["_id"])], "extra": [id_of("c-extra")], "differing": [id_of("c0")]}


def test_a_collection_without_a_silver_table_misses_every_document(pipeline) -> None:
    database, root, _stored = pipeline
    database["tickets"].insert_one({"_id": 1})
    result = _verify(database, root, "--collection", "tickets", "--collection", "orders")
    assert result.exit_code == ExitCode.DIFFERENCES_FOUND, result.output
    assert "no table" in result.output and "tickets: 1 missing in silver: 1" in result.output


def test_without_a_mongodb_uri_verify_is_a_configuration_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["verify"], env={"SPARK_JOBS_LAKE_ROOT": str(tmp_path)})
    assert result.exit_code == ExitCode.BAD_CONFIGURATION
    assert "--mongo-uri" in result.output


def test_an_unreachable_mongodb_fails_without_showing_its_password(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    _write_silver(root, "orders", [])
    secret = uuid.uuid4().hex
    result = CliRunner().invoke(
        app,
        ["verify", "--mongo-uri", f"mongodb://reader:{secret}@127.0.0.1:1/?directConnection=true"],
        env={"SPARK_JOBS_LAKE_ROOT": root, "SPARK_JOBS_VERIFY__SERVER_SELECTION_TIMEOUT_SECONDS": "0.5"},
    )
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "did not answer" in result.output and "reader:***@" in result.output
    assert secret not in result.output


def test_silver_side_reads_deleted_rows_as_absent(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    document = {"_id": 1, "v": 1}
    _write_silver(root, "things", [_silver_row(document), _silver_row({"_id": 2}, deleted=True)])
    side = silver_side(root, "things")
    assert side is not None and side.hashes == {id_of(1): document_hash(document)} and side.rows == 1
    assert silver_side(root, "nothing") is None
