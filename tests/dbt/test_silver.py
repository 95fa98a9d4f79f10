"""Silver's current state equals the source's final state, whatever order and duplication bronze brings."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC

import polars as pl
from bson import Decimal128, ObjectId, json_util
from deltalake import DeltaTable

from data_generator import COLLECTIONS
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS
from lakehouse_common.lake import bronze_table_uri
from spark_jobs.lake_tables import layer_counts
from spark_jobs.verify import compare, documents_side, id_from_lake, id_of, silver_side


def _document(text: str) -> dict:
    return json_util.loads(text, json_options=EXTENDED_JSON_OPTIONS)


def _key(value: object) -> str:
    """``__document_id``: the _id as compact relaxed Extended JSON."""
    return json_util.dumps(value, json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))


def _normalized(document: dict) -> dict:
    """Datetimes as stored by the generator (tz-aware UTC), everything else untouched."""
    return json_util.loads(json_util.dumps(document, json_options=EXTENDED_JSON_OPTIONS), json_options=EXTENDED_JSON_OPTIONS)


def _string_column(value: object) -> str | None:
    """A string column's value: ObjectIds and strings are held, any other type is rescued (null)."""
    return str(value) if isinstance(value, (ObjectId, str)) else None


def _number(value: object) -> float:
    return float(value.to_decimal()) if isinstance(value, Decimal128) else float(value)


def test_current_state_equals_the_source_after_inserts_updates_replaces_and_deletes(built_lake) -> None:
    operations = Counter(event["operationType"] for event in built_lake.events)
    assert {"snapshot", "insert", "update", "replace", "delete"} <= set(operations)
    for collection in COLLECTIONS:
        silver = built_lake.silver[f"stg_mongo__{collection}"]
        expected = built_lake.state[collection]
        assert sorted(silver["__document_id"]) == sorted(expected), f"{collection}: documents differ"
        assert not silver["__is_deleted"].any()
        for row in silver.iter_rows(named=True):
            if row["__document_id"] in built_lake.partial_updates:
                continue
            assert _document(row["__full_document"]) == _normalized(expected[row["__document_id"]]), (
                f"{collection} {row['__document_id']} differs from the source"
            )
            assert row["_id"] == _string_column(expected[row["__document_id"]]["_id"])
            assert not row["__has_unapplied_updates"]


def test_verify_proves_silver_equal_to_the_source_but_for_what_it_cannot_know(built_lake) -> None:
    """``spark-jobs verify``'s comparison on silver as dbt built it: every document equal by hash, except
    the images updates without fullDocument could not bring, and the third run's inserts and deletion."""
    differences = {}
    for collection in COLLECTIONS:
        mongo = documents_side(built_lake.state[collection].values())
        diff = compare(mongo, silver_side(built_lake.root, collection, built_lake.storage_options))
        differences[collection] = (diff.missing, diff.extra, diff.differing)
        assert diff.rows > 0 and diff.table, collection
    expected = dict.fromkeys(COLLECTIONS, ([], [], []))
    expected["products"] = ([], [], sorted(id_from_lake(identifier) for identifier in built_lake.partial_updates))
    third_run_inserts = sorted(
        id_of(ObjectId(identifier)) for identifier in (built_lake.lost_order_id, built_lake.late_visible_order_id)
    )
    expected["orders"] = ([id_of(built_lake.deleted_order["_id"])], third_run_inserts, [])
    assert differences == expected


def test_typed_columns_carry_the_documents_fields(built_lake) -> None:
    products = built_lake.silver["stg_mongo__products"]
    assert products.schema["__v"] == pl.Int64, "a field named with __ (Mongoose's version key) is a document column"
    for row in products.iter_rows(named=True):
        assert row["__v"] == built_lake.state["products"][row["__document_id"]]["__v"]
    orders = built_lake.silver["stg_mongo__orders"]
    for row in orders.iter_rows(named=True):
        source = built_lake.state["orders"][row["__document_id"]]
        assert row["status"] == source["status"]
        assert row["customer_id"] == _string_column(source["customer_id"])
        assert row["placed_at"] == source["placed_at"].astimezone(UTC)
        assert row["total"] == _number(source["total"]), "a Decimal128 that is an exact double fills the double column"
        assert json.loads(row["items"]) == json.loads(json_util.dumps(source["items"], json_options=EXTENDED_JSON_OPTIONS))


def test_rescued_numbers_fill_typed_columns_only_where_they_convert_without_loss(built_lake) -> None:
    """Bronze rescues a value whose type differs from its column's; silver's typed column takes it
    back when nothing is lost (12.0 into a long), and leaves a fraction in a long column null,
    with the value still in __rescued_data (the marts type it themselves)."""
    posts = built_lake.silver["stg_mongo__social_engagement"]
    post = posts.filter(pl.col("__document_id") == _key(built_lake.review.post_without_shares_id)).row(0, named=True)
    assert posts.schema["likes"] == pl.Int64 and post["likes"] == 12 and post["shares"] is None
    assert json.loads(post["__rescued_data"])["likes"] == {"type": "double", "value": 12.0}
    spend = built_lake.silver["stg_mongo__ad_spend"]
    assert spend.schema["spend"] == pl.Int64, "the first spend bronze saw was an integer"
    fractions = 0
    for row in spend.iter_rows(named=True):
        source = built_lake.state["ad_spend"][row["__document_id"]]["spend"]
        if source == int(source):
            assert row["spend"] == int(source)
        else:
            fractions += 1
            assert row["spend"] is None and json.loads(row["__rescued_data"])["spend"]["value"] == source
    assert fractions > 0


def test_several_changes_in_one_batch_are_reduced_to_the_latest(built_lake) -> None:
    per_document = Counter((event["ns"]["coll"], _key(event["documentKey"]["_id"])) for event in built_lake.first_batch)
    busy = [key for key, count in per_document.items() if count >= 3]
    assert len(busy) >= 3, "batch 1 must hold documents changed several times"
    after_first = {
        name: dict(zip(frame["__document_id"], frame["__event_id"], strict=True))
        for name, frame in ((name, built_lake.silver_after_first[f"stg_mongo__{name}"]) for name in COLLECTIONS)
    }
    for collection, identifier in busy:
        latest = max(
            event["_id"]["_data"]
            for event in built_lake.first_batch
            if event["ns"]["coll"] == collection and _key(event["documentKey"]["_id"]) == identifier
        )
        last_operation = next(event["operationType"] for event in built_lake.first_batch if event["_id"]["_data"] == latest)
        if last_operation == "delete":
            assert identifier not in after_first[collection]
        else:
            assert after_first[collection][identifier] == latest


def test_late_events_never_override_newer_ones_nor_revive_deleted_documents(built_lake) -> None:
    assert built_lake.late_events
    revived_checked = 0
    for event in built_lake.late_events:
        collection = event["ns"]["coll"]
        identifier = _key(event["documentKey"]["_id"])
        silver = built_lake.silver[f"stg_mongo__{collection}"].filter(pl.col("__document_id") == identifier)
        if identifier in built_lake.state[collection]:
            assert silver["__event_id"].item() > event["_id"]["_data"]
        else:
            assert silver.is_empty(), "a late event revived a deleted document"
            revived_checked += 1
    assert revived_checked >= 1, "at least one late event belongs to a deleted document"


def test_updates_without_full_document_keep_the_last_image_and_say_so(built_lake) -> None:
    products = built_lake.silver["stg_mongo__products"]
    for identifier, (image, final) in built_lake.partial_updates.items():
        row = products.filter(pl.col("__document_id") == identifier).row(0, named=True)
        assert row["__has_unapplied_updates"]
        assert row["__operation"] == "update" and row["__image_event_id"] < row["__event_id"]
        assert row["price"] == image["price"] != final["price"]
        assert _document(row["__full_document"]) == _normalized(image)


def test_flag_mode_keeps_deleted_documents_with_their_last_values(built_lake) -> None:
    deleted = built_lake.deleted_order
    identifier = _key(deleted["_id"])
    row = built_lake.orders_after_third.filter(pl.col("__document_id") == identifier).row(0, named=True)
    assert row["__is_deleted"] and row["__operation"] == "delete"
    assert row["status"] == deleted["status"] and row["order_number"] == deleted["order_number"]
    lost = built_lake.orders_after_third.filter(pl.col("_id") == built_lake.lost_order_id)
    assert lost["status"].to_list() == ["lost"], "silver takes the document as it is; the mart's test rejects it"


def test_a_commit_that_becomes_visible_late_is_processed_whatever_its_ingestion_time(built_lake) -> None:
    """The third run reads bronze by commit version: a commit stamped three hours before the ones
    already processed is still read (a window on __ingested_at would skip it for good)."""
    late = built_lake.orders_after_third.filter(pl.col("_id") == built_lake.late_visible_order_id)
    assert late["status"].to_list() == ["placed"]
    bronze = DeltaTable(bronze_table_uri(built_lake.root, "shop", "orders"), storage_options=built_lake.storage_options)
    assert late["__bronze_version"].to_list() == [bronze.version()], "the row records the commit it came from (the last)"


def test_incremental_merges_use_deletion_vectors_and_stamp_the_rows_they_write(built_lake) -> None:
    """The second run merged into silver: rows it replaced are marked deleted (not rewritten),
    every reader above (Polars) applied those marks, and the rows it wrote carry its start."""
    replaced = 0
    for collection in COLLECTIONS:
        for name in (f"stg_mongo__{collection}", f"stg_mongo__{collection}_history"):
            table = DeltaTable(f"{built_lake.root}/silver/{name}", storage_options=built_lake.storage_options)
            assert "deletionVectors" in (table.protocol().reader_features or []), name
            replaced += sum(vector.count(False) for vector in table.deletion_vectors().read_all()["selection_vector"].to_pylist())
    assert replaced > 0, "the second run's merges replaced rows through deletion vectors"
    counts = layer_counts(built_lake.root, built_lake.storage_options)
    for collection in COLLECTIONS:
        if collection != "orders":  # the third run changed orders
            assert counts["silver"][collection] == len(built_lake.state[collection]), f"{collection}: deleted rows counted"
    stamps = set()
    for collection in COLLECTIONS:
        history = built_lake.history[f"stg_mongo__{collection}_history"]
        stamps.update(history["__processed_at"].unique())
        first_batch_ids = [event["_id"]["_data"] for event in built_lake.first_batch if event["ns"]["coll"] == collection]
        latest_stamp = history["__processed_at"].max()
        if latest_stamp == history["__processed_at"].min():
            continue  # no event of this collection in the second batch
        # A version of the first run that the second rewrote was closed by a later event.
        rewritten = history.filter(pl.col("__event_id").is_in(first_batch_ids) & (pl.col("__processed_at") == latest_stamp))
        assert not rewritten["__is_current"].any(), collection
    assert len(stamps) == 2, "the first run's untouched rows keep its stamp"


def test_silver_tests_check_the_rows_the_last_run_wrote(built_lake) -> None:
    compiled = built_lake.work / "target" / "compiled" / "mongo_lakehouse" / "models" / "staging" / "mongo"
    unique_current = (compiled / "_mongo__models.yml" / "unique_stg_mongo__customers___document_id.sql").read_text()
    assert "__processed_at >= timestamp '" in unique_current
    one_current_version = next(
        path.read_text()
        for path in (compiled / "_mongo__models.yml").glob("unique_stg_mongo__customers_history___document_id*.sql")
    )
    assert "__is_current and __document_id in (select __document_id from" in one_current_version


def test_the_current_state_reads_the_changed_history_rows_not_the_history(built_lake) -> None:
    """An incremental run of the current state reads history's change data feed from the version it
    processed last (recorded in __history_version by the same MERGE) and the stored rows of the
    documents it touches: its cost follows the change, not the history's length."""
    invocations = (built_lake.work / "logs" / "dbt.log").read_text().split("Running with dbt=")[1:]
    first, second = invocations[0], invocations[1]
    for collection in COLLECTIONS:
        history = f"silver.stg_mongo__{collection}_history"
        assert f"{history} version as of 0" in first, f"{collection}: the full build reads the history whole"
        assert re.search(rf"table_changes\('{history}', [1-9][0-9]*, [0-9]+\)", second), collection
        assert f"{history} version as of" not in second, f"{collection}: an incremental run read the whole history"
        table = DeltaTable(
            f"{built_lake.root}/silver/stg_mongo__{collection}_history", storage_options=built_lake.storage_options
        )
        assert table.metadata().configuration.get("delta.enableChangeDataFeed") == "true"
        if collection != "orders":  # the third run wrote orders' history again
            assert built_lake.silver[f"stg_mongo__{collection}"]["__history_version"].max() == table.version(), collection
    history = DeltaTable(f"{built_lake.root}/silver/stg_mongo__orders_history", storage_options=built_lake.storage_options)
    assert built_lake.orders_after_third["__history_version"].max() == history.version()
