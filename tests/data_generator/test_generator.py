"""The dataset: deterministic, consistent, with a lifecycle, deletes and the four drift steps."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import timedelta

import bson

from data_generator import COLLECTIONS, Delete, GeneratorConfig, Insert, Replace, SalesMarketingGenerator, Update
from data_generator.domain import FUNNEL_STEPS, ORDER_STATUSES

SMALL = GeneratorConfig(seed=7, scale=0.1, history_days=15, drift_every=200)


def _fingerprint(generator: SalesMarketingGenerator, changes: int) -> str:
    digest = hashlib.sha256()
    for operation in [*generator.initial_load(), *generator.changes(changes)]:
        fields = {name: getattr(operation, name) for name in operation.__slots__}
        digest.update(type(operation).__name__.encode() + bson.encode({"fields": fields}))
    return digest.hexdigest()


def test_the_same_config_gives_the_same_operations_and_another_seed_does_not() -> None:
    first = _fingerprint(SalesMarketingGenerator(SMALL), 500)
    assert first == _fingerprint(SalesMarketingGenerator(SMALL), 500)
    assert first != _fingerprint(SalesMarketingGenerator(SMALL.model_copy(update={"seed": 8})), 500)


def test_the_initial_load_fills_every_collection_with_consistent_documents() -> None:
    generator = SalesMarketingGenerator(SMALL)
    inserts = generator.initial_load()
    assert all(isinstance(operation, Insert) for operation in inserts)
    assert {operation.collection for operation in inserts} == set(COLLECTIONS)
    assert generator.document_counts() == Counter(operation.collection for operation in inserts)
    state = generator.state
    for order in state["orders"].values():
        assert order["customer_id"] in state["customers"]
        assert all(item["sku"] in state["products"] for item in order["items"])
        assert order["status"] == order["status_history"][-1]["status"]
        assert order["total"] == round(order["subtotal"] - order["discount_total"] + order["shipping_fee"], 2)
        if "session_id" in order:
            assert state["web_sessions"][order["session_id"]]["order_id"] == order["_id"]
    campaign_codes = {campaign["utm_campaign"] for campaign in state["campaigns"].values()}
    for session in state["web_sessions"].values():
        names = [event["name"] for event in session["events"]]
        assert names == list(FUNNEL_STEPS[: len(names)]), "a session reaches a prefix of the funnel"
        assert session.get("utm_campaign") is None or session["utm_campaign"] in campaign_codes
    for spend in state["ad_spend"].values():
        assert spend["campaign_id"] in state["campaigns"]


def test_changes_follow_the_order_lifecycle_and_never_mutate_earlier_post_images() -> None:
    generator = SalesMarketingGenerator(SMALL)
    generator.initial_load()
    allowed = {
        "placed": {"paid", "cancelled"},
        "paid": {"shipped", "cancelled"},
        "shipped": {"delivered"},
        "delivered": {"refunded"},
    }
    statuses: dict[object, str] = {order_id: order["status"] for order_id, order in generator.state["orders"].items()}
    reached = set(statuses.values())
    kept: list[tuple[dict, bytes]] = []
    kinds = Counter()
    for operation in generator.changes(3000):
        kinds[type(operation).__name__, operation.collection] += 1
        if isinstance(operation, Update) and operation.collection == "orders" and "status" in operation.set_fields:
            new_status = operation.set_fields["status"]
            assert new_status in allowed[statuses[operation.document_id]]
            statuses[operation.document_id] = new_status
            reached.add(new_status)
            assert operation.document["status_history"][-1]["status"] == new_status
        elif isinstance(operation, Insert) and operation.collection == "orders":
            statuses[operation.document_id] = operation.document["status"]
            reached.add(operation.document["status"])
        if not isinstance(operation, Delete) and len(kept) < 200:
            kept.append((operation.document, bson.encode(operation.document)))
    for document, encoded in kept:
        assert bson.encode(document) == encoded, "a post-image changed after it was emitted"
    assert reached == set(ORDER_STATUSES)
    for collection in ("customers", "web_sessions", "social_engagement", "orders"):
        assert kinds["Delete", collection] > 0, f"no deletes in {collection}"
    assert kinds["Replace", "customers"] > 0 and kinds["Replace", "products"] > 0
    assert kinds["Update", "ad_spend"] > 0 and kinds["Update", "social_engagement"] > 0


def test_schema_drift_arrives_in_four_steps() -> None:
    generator = SalesMarketingGenerator(SMALL)
    generator.initial_load()
    customers = generator.state["customers"].values()
    assert not any("loyalty_tier" in customer for customer in customers)
    assert any("fax" in customer for customer in customers)
    assert all(isinstance(customer["zip_code"], int) for customer in customers)
    operations = list(generator.changes(4 * SMALL.drift_every + 400))
    assert generator.drift_level == 4
    late_customers = [
        operation.document
        for operation in operations[4 * SMALL.drift_every :]
        if operation.collection == "customers" and isinstance(operation, (Insert, Replace, Update))
    ]
    assert late_customers and all("loyalty_tier" in customer for customer in late_customers)  # field added
    assert all("fax" not in customer for customer in late_customers)  # field removed
    assert all(isinstance(customer["zip_code"], str) for customer in late_customers)  # type changed
    removals = [operation for operation in operations if isinstance(operation, Update) and "fax" in operation.unset_fields]
    assert removals and all("fax" in operation.update_description()["removedFields"] for operation in removals)
    late_orders = [
        operation.document
        for operation in operations[4 * SMALL.drift_every :]
        if operation.collection == "orders" and isinstance(operation, Insert)
    ]
    assert late_orders and all("geo" in order["shipping"]["address"] for order in late_orders)  # new nested field


def test_resume_continues_from_existing_documents() -> None:
    generator = SalesMarketingGenerator(SMALL)
    generator.initial_load()
    list(generator.changes(4 * SMALL.drift_every + 10))
    resumed = SalesMarketingGenerator.resume(
        {name: list(documents.values()) for name, documents in generator.state.items()}, SMALL
    )
    assert resumed.document_counts() == generator.document_counts()
    assert resumed.drift_level == 4
    assert resumed.clock >= generator.clock - timedelta(seconds=1)
    for operation in resumed.changes(500):
        if isinstance(operation, Insert):
            assert operation.document_id not in generator.state[operation.collection], "a resumed insert reused an id"
