"""One lake, built by the real dbt on Spark with Delta in three runs, shared by every test here.

Spark and dbt are slow to start, so the lake is built once and each test asserts on it:

1. bronze batch 1: the initial load as snapshot records, then changes before any schema
   drift; a few of its events are held back to arrive late. ``dbt run`` of silver.
2. bronze batch 2: the rest of the changes (all four drift steps), the late events, some
   re-delivered events, updates without fullDocument, and the review cases the marts once got
   wrong (``_review_cases``): two campaigns sharing a utm_campaign, a post without a share
   count, Decimal128 prices, an _id stored as a long and referenced as a double. ``dbt build``
   (every test). Bronze's ``spend`` column is a long (the first snapshot's spend is an
   integer), so every later fraction is a rescued value the marts must still count.
3. bronze batch 3: an order with an unknown status and an order deletion, and a commit whose
   ``__ingested_at`` lies hours before the ones already processed (a commit that became
   visible late: a slow replica, a skewed clock); a ``dbt build``
   of the orders models with ``silver_deletes=flag``, which must fail on the status test,
   then ``dbt docs generate``.

Bronze is written with ``data_generator.bronze`` in bronze_writer's schema. The lake is
built twice and every test here runs against both: on a local directory by an in-process
Spark (dbt's ``spark_session`` target, ``local``), and on the object store by a standalone
Spark cluster through its Thrift Server (dbt's ``cluster`` target, ``s3``), so the same
full and incremental builds are proven on both deployments.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from bson import Decimal128, Int64, ObjectId, json_util

from data_generator import (
    COLLECTIONS,
    BronzeFixtureWriter,
    ChangeEventEncoder,
    Delete,
    GeneratorConfig,
    Insert,
    SalesMarketingGenerator,
    Update,
)
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS
from spark_jobs.dbt_runner import DbtResult, DbtRunner
from spark_jobs.session import SparkSettings
from spark_jobs.settings import DbtSettings, SparkJobsSettings

CONFIG = GeneratorConfig(seed=21, scale=0.2, history_days=20, drift_every=150)
FIRST_CHANGES = 140  # below drift_every: batch 1 has no drift
SECOND_CHANGES = 520  # reaches all four drift steps
LATE_DOCUMENTS = 8
REDELIVERED = 5
FAILING_BUILD = "build --select stg_mongo__orders_history stg_mongo__orders int_orders --vars '{silver_deletes: flag}'"
GOLD_MODELS = (
    "orders",
    "daily_revenue",
    "customers",
    "customer_cohorts",
    "product_performance",
    "conversion_funnel",
    "campaign_performance",
)


def load_reference() -> ModuleType:
    """The Polars reference implementation of the marts (a sibling file, not a package)."""
    spec = importlib.util.spec_from_file_location("dbt_reference_marts", Path(__file__).with_name("reference_marts.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def document_id(value: Any) -> str:
    """``__document_id``: the _id as compact relaxed Extended JSON."""
    return json_util.dumps(value, json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))


def event_document_id(event: dict[str, Any]) -> str:
    return document_id(event["documentKey"]["_id"])


@dataclass
class BuiltLake:
    """Everything the tests compare: what went in, what dbt said, what came out."""

    root: str  # a local path or an s3:// URI
    storage_options: dict[str, str]
    work: Path  # dbt's target and logs, Spark's warehouse and metastore
    state: dict[str, dict[str, dict[str, Any]]]
    partial_updates: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    first_batch: list[dict[str, Any]]
    second_batch: list[dict[str, Any]]
    late_events: list[dict[str, Any]]
    redelivered: list[dict[str, Any]]
    first_run: list[DbtResult]
    second_run: list[DbtResult]
    third_run: list[DbtResult]
    silver_after_first: dict[str, pl.DataFrame]
    silver: dict[str, pl.DataFrame]
    history: dict[str, pl.DataFrame]
    gold: dict[str, pl.DataFrame]
    expected_gold: dict[str, pl.DataFrame]
    orders_after_third: pl.DataFrame
    lost_order_id: str
    late_visible_order_id: str  # landed in a commit whose __ingested_at is hours before the processed ones
    deleted_order: dict[str, Any]
    review: ReviewCases
    absence: AbsenceCases
    dbt_log: list[tuple[str, float, logging.LogRecord]] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event landed before the third run (re-deliveries included)."""
        return self.first_batch + self.second_batch


class _DbtLog(logging.Handler):
    def __init__(self, sink: list[tuple[str, float, logging.LogRecord]]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append((getattr(record, "dbt_command", ""), record.created, record))


def _read_layer(root: str, layer: str, names: list[str], options: dict[str, str]) -> dict[str, pl.DataFrame]:
    return {name: pl.read_delta(f"{root}/{layer}/{name}", storage_options=options) for name in names}


def _hold_back_late_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Take one earlier event of a few documents out of the batch: it will arrive after newer ones."""
    changes = [event for event in events if event["operationType"] != "snapshot"]
    per_document: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in changes:
        per_document.setdefault((event["ns"]["coll"], event_document_id(event)), []).append(event)
    late_ids = set()
    for collection in ("orders", "customers", "social_engagement", "web_sessions"):
        # Documents deleted in this batch first: an older event arriving late must not revive them.
        candidates = sorted(
            (key for key, document_events in per_document.items() if key[0] == collection and len(document_events) >= 2),
            key=lambda key: (per_document[key][-1]["operationType"] != "delete", key),
        )
        late_ids.update(per_document[key][-2]["_id"]["_data"] for key in candidates[: LATE_DOCUMENTS // 4])
    late = [event for event in events if event["_id"]["_data"] in late_ids]
    return [event for event in events if event["_id"]["_data"] not in late_ids], late


@dataclass
class ReviewCases:
    """Documents the marts once got wrong, inserted in batch 2 (ids for the tests)."""

    inserts: list[Insert]
    shared_utm_campaign_id: str  # a second campaign with an existing campaign's utm_campaign
    post_without_shares_id: str  # likes stored as a double (12.0), no shares field
    decimal_order_id: str  # items priced in Decimal128, total a Decimal128
    long_id_customer_id: Int64  # a customer whose _id is a long ...
    double_reference_order_id: str  # ... and an order that references it as a double


def _review_cases(generator: SalesMarketingGenerator) -> ReviewCases:
    state, at = generator.state, generator.clock + timedelta(seconds=2)
    active = next(campaign for _, campaign in sorted(state["campaigns"].items()) if campaign["status"] in ("active", "ended"))
    shared = {**active, "_id": "CMP-9001", "name": "Shared UTM #9001", "start_date": active["start_date"] + timedelta(days=3)}
    post = next(post for _, post in sorted(state["social_engagement"].items()) if post.get("campaign_id"))
    post = {key: value for key, value in post.items() if key != "shares"} | {"_id": "POST-900001", "likes": 12.0}
    order = state["orders"][sorted(state["orders"], key=str)[0]]
    sku = sorted(state["products"])[0]
    decimal_order = {
        **order,
        "_id": ObjectId("6700000000000000000000cc"),
        "order_number": "ORD-90000001",
        "status": "paid",
        "items": [{"sku": sku, "quantity": 2, "unit_price": Decimal128("19.90"), "discount": Decimal128("1.50")}],
        "total": Decimal128("38.30"),
    }
    customer = state["customers"][sorted(state["customers"], key=str)[0]]
    long_customer = {**customer, "_id": Int64(90001), "customer_number": "C9000001", "email": "long.id@example.com"}
    double_order = {
        **order,
        "_id": ObjectId("6700000000000000000000dd"),
        "order_number": "ORD-90000002",
        "status": "delivered",
        "customer_id": 90001.0,
    }
    inserts = [
        Insert("campaigns", shared, at),
        Insert("social_engagement", post, at),
        Insert("orders", decimal_order, at),
        Insert("customers", long_customer, at),
        Insert("orders", double_order, at),
    ]
    return ReviewCases(
        inserts=inserts,
        shared_utm_campaign_id=shared["_id"],
        post_without_shares_id=post["_id"],
        decimal_order_id=str(decimal_order["_id"]),
        long_id_customer_id=long_customer["_id"],
        double_reference_order_id=str(double_order["_id"]),
    )


@dataclass
class AbsenceCases:
    """Documents MongoDB lost while the stream could not tell (batch 2), for the tests."""

    events: list[dict[str, Any]]
    dropped_post_ids: list[str]  # social_engagement was dropped; these posts were not inserted again
    reinserted_post_ids: list[str]
    unseen_deleted_session_ids: list[str]  # deleted unseen: absent from the re-snapshot of web_sessions


def _absence_cases(generator: SalesMarketingGenerator, encoder: ChangeEventEncoder, late: list[dict[str, Any]]) -> AbsenceCases:
    """social_engagement dropped and all but two posts inserted again; web_sessions copied again
    (attempt 1) without three sessions deleted unseen."""
    state, at = generator.state, generator.clock + timedelta(seconds=1)
    posts = sorted(state["social_engagement"], key=str)
    dropped, reinserted = posts[:2], posts[2:]
    events = [encoder.drop("social_engagement", at)]
    events += encoder.events(Insert("social_engagement", state["social_engagement"][key], at) for key in reinserted)
    for key in dropped:
        del state["social_engagement"][key]
    late_sessions = {event_document_id(event) for event in late if event["ns"]["coll"] == "web_sessions"}
    sessions = [key for key in sorted(state["web_sessions"], key=str) if document_id(key) not in late_sessions]
    gone = sessions[:3]
    for key in gone:
        del state["web_sessions"][key]
    events += encoder.full_copy(
        "web_sessions",
        [
            Insert("web_sessions", document, at)
            for _, document in sorted(state["web_sessions"].items(), key=lambda item: str(item[0]))
        ],
        attempt=1,
        at=at,
    )
    return AbsenceCases(
        events=events,
        dropped_post_ids=[document_id(key) for key in dropped],
        reinserted_post_ids=[document_id(key) for key in reinserted],
        unseen_deleted_session_ids=[document_id(key) for key in gone],
    )


def _integer_first_spend(snapshot: list[dict[str, Any]], generator: SalesMarketingGenerator) -> None:
    """The first ad_spend document bronze sees gets an integer spend: its column becomes a long."""
    first = next(event for event in snapshot if event["ns"]["coll"] == "ad_spend")
    spend = int(round(first["fullDocument"]["spend"]))
    first["fullDocument"] = {**first["fullDocument"], "spend": spend}
    generator.state["ad_spend"][first["documentKey"]["_id"]]["spend"] = spend


@pytest.fixture(scope="session")
def dbt_reference() -> ModuleType:
    return load_reference()


@pytest.fixture(scope="session", params=["local", pytest.param("s3", marks=pytest.mark.object_store)])
def built_lake(
    run_dir: Path, dbt_reference: ModuleType, small_spark: Callable[..., SparkSettings], request: pytest.FixtureRequest
) -> Iterator[BuiltLake]:
    work = run_dir / f"dbt-work-{request.param}"
    target: dict[str, Any] = {}
    if request.param == "s3":
        store = request.getfixturevalue("object_store")
        root, options = store.lake_root("dbt-lake"), store.storage_options()
        target = {"target": "cluster", "env": request.getfixturevalue("spark_cluster").dbt_environment()}
    else:
        root, options = str(run_dir / "dbt-lake"), {}
    settings = SparkJobsSettings(
        lake_root=root,
        storage_options=options,
        spark=small_spark(work, master="local[2]", app_name="dbt-tests"),
        dbt=DbtSettings(
            target_path=work / "target",
            log_path=work / "logs",
            spark_conf_dir=work / "conf",
            threads=4,
            **target,
        ),
    )

    def run(*commands: str) -> list[DbtResult]:
        phase = settings.model_copy(update={"dbt": settings.dbt.model_copy(update={"commands": list(commands)})})
        return DbtRunner(phase).run_all()

    log: list[tuple[str, float, logging.LogRecord]] = []
    handler = _DbtLog(log)
    dbt_logger = logging.getLogger("dbt")
    dbt_logger.addHandler(handler)
    previous_level = dbt_logger.level
    dbt_logger.setLevel(logging.DEBUG)
    try:
        generator = SalesMarketingGenerator(CONFIG)
        encoder = ChangeEventEncoder("shop")
        writer = BronzeFixtureWriter(root, storage_options=options)

        snapshot = list(encoder.snapshot(generator.initial_load()))
        _integer_first_spend(snapshot, generator)
        changes, late = _hold_back_late_events(list(encoder.events(generator.changes(FIRST_CHANGES))))
        assert generator.drift_level == 0
        # Hours apart: the incremental runs read bronze by commit version, whatever the ingestion time.
        writer.write(snapshot, datetime.now(UTC) - timedelta(hours=5))
        writer.write(changes, datetime.now(UTC) - timedelta(hours=2))
        first = snapshot + changes
        first_run = run("run --select staging")
        assert [result.exit_code for result in first_run] == [0], "the first run failed: see the dbt log records"
        silver_after_first = _read_layer(root, "silver", [f"stg_mongo__{name}" for name in COLLECTIONS], options)

        second = list(encoder.events(generator.changes(SECOND_CHANGES)))
        assert generator.drift_level == 4
        partial_updates: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        encoder.update_lookup = False
        for sku in sorted(generator.state["products"])[:2]:
            image = generator.state["products"][sku]
            final = {**image, "price": round(image["price"] + 1, 2), "updated_at": generator.clock + timedelta(seconds=1)}
            update = Update("products", sku, final, generator.clock, {"price": final["price"], "updated_at": final["updated_at"]})
            second.append(encoder.event(update))
            partial_updates[document_id(sku)] = (image, final)
        encoder.update_lookup = True
        absence = _absence_cases(generator, encoder, late)
        second += absence.events
        review = _review_cases(generator)
        second += encoder.events(review.inserts)
        redelivered = copy.deepcopy(first[-REDELIVERED:])
        second += late + redelivered
        writer.write(second, datetime.now(UTC))
        second_run = run("build")
        assert [result.exit_code for result in second_run] == [0], "the second build failed: see the dbt log records"

        state = {
            name: {document_id(key): document for key, document in documents.items()}
            for name, documents in generator.state.items()
        }
        for identifier, (_, final) in partial_updates.items():
            state["products"][identifier] = final
        for insert in review.inserts:
            state[insert.collection][document_id(insert.document["_id"])] = insert.document
        silver = _read_layer(root, "silver", [f"stg_mongo__{name}" for name in COLLECTIONS], options)
        history = _read_layer(root, "silver", [f"stg_mongo__{name}_history" for name in COLLECTIONS], options)
        gold = _read_layer(root, "gold", list(GOLD_MODELS), options)
        expected_gold = dbt_reference.marts(f"{root}/bronze/shop", options)

        orders = generator.state["orders"]
        template = orders[sorted(orders, key=str)[0]]
        lost = {**template, "_id": ObjectId("6700000000000000000000aa"), "status": "lost"}
        deleted_id = next(key for key in sorted(orders, key=str) if orders[key]["status"] == "delivered")
        at = generator.clock + timedelta(minutes=5)
        writer.write(encoder.events([Insert("orders", lost, at), Delete("orders", deleted_id, at)]), datetime.now(UTC))
        late_visible = {**template, "_id": ObjectId("6700000000000000000000bb"), "status": "placed"}
        writer.write(encoder.events([Insert("orders", late_visible, at)]), datetime.now(UTC) - timedelta(hours=3))
        third_run = run(FAILING_BUILD, "docs generate")
        orders_after_third = pl.read_delta(f"{root}/silver/stg_mongo__orders", storage_options=options)

        yield BuiltLake(
            root=root,
            storage_options=options,
            work=work,
            state=state,
            partial_updates=partial_updates,
            first_batch=first,
            second_batch=second,
            late_events=late,
            redelivered=redelivered,
            first_run=first_run,
            second_run=second_run,
            third_run=third_run,
            silver_after_first=silver_after_first,
            silver=silver,
            history=history,
            gold=gold,
            expected_gold=expected_gold,
            orders_after_third=orders_after_third,
            lost_order_id=str(lost["_id"]),
            late_visible_order_id=str(late_visible["_id"]),
            deleted_order=orders[deleted_id],
            review=review,
            absence=absence,
            dbt_log=log,
        )
    finally:
        dbt_logger.removeHandler(handler)
        dbt_logger.setLevel(previous_level)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test of each lake builds it (three dbt runs): give it longer than the suite's per-test timeout."""
    for item in items:
        if "built_lake" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(3600))
