"""The gold marts computed again in Polars, straight from bronze: the independent side of the comparison.

Nothing here shares code with dbt. The current state is rebuilt from the bronze rows (the
latest event per document by event id; a delete removes the document, and so does a
collection event with an absence position above that event (a drop, a re-snapshot's
marker: docs/event-contract.md); otherwise the
latest full document counts, as silver documents it), the documents are parsed from
their Extended JSON, and each mart follows its definition in docs/silver_gold.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from bson import Decimal128, json_util

from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, absence_position

REVENUE_STATUSES = ("paid", "shipped", "delivered")
ATTRIBUTION_WINDOW = timedelta(days=30)


def current_documents(bronze_table: str, storage_options: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Document id -> the document, from a bronze table's events (a path or an object-store URI)."""
    table = pl.read_delta(bronze_table, storage_options=storage_options)
    positions = [
        position
        for event_id, operation in table.select("__event_id", "__operation").iter_rows()
        if (position := absence_position(event_id, operation)) is not None
    ]
    events = table.filter(pl.col("__operation").is_in(["insert", "update", "replace", "delete", "snapshot"]))
    events = events.unique("__event_id", keep="first").sort("__event_id")
    latest = events.group_by("__document_id").agg(pl.col("__operation").last(), pl.col("__event_id").last())
    latest = latest.filter(pl.col("__event_id") > max(positions, default=""))
    images = (
        events.filter(pl.col("__full_document").is_not_null()).group_by("__document_id").agg(pl.col("__full_document").last())
    )
    alive = latest.filter(pl.col("__operation") != "delete").join(images, on="__document_id", how="inner")
    return {
        row["__document_id"]: json_util.loads(row["__full_document"], json_options=EXTENDED_JSON_OPTIONS)
        for row in alive.iter_rows(named=True)
    }


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _text(value: Any) -> str | None:
    """An id as the marts key it: MongoDB holds 1, 1.0, NumberLong(1) and NumberDecimal("1") equal."""
    if value is None:
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(int(value)) if value == int(value) else str(float(value))
    return str(value)


def _int(value: Any) -> int | None:
    """An integer count; an integral double (12.0) counts, a fraction is no count (null)."""
    number = _number(value)
    return None if number is None or number != int(number) else int(number)


def _number(value: Any) -> float | None:
    """A number as the marts read it: Decimal128 too."""
    if value is None:
        return None
    return float(value.to_decimal()) if isinstance(value, Decimal128) else float(value)


def _frame(rows: list[dict[str, Any]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


TS = pl.Datetime("us", "UTC")


def source_frames(bronze_root: str | Path, storage_options: dict[str, str] | None = None) -> dict[str, pl.DataFrame]:
    """Typed frames of the current documents that the marts use."""
    documents = {name: list(current_documents(f"{bronze_root}/{name}", storage_options).values()) for name in (
        "customers", "products", "orders", "campaigns", "ad_spend", "web_sessions", "social_engagement"
    )}  # fmt: skip
    orders = _frame(
        [
            {
                "order_id": _text(order["_id"]),
                "order_number": order.get("order_number"),
                "customer_id": _text(order.get("customer_id")),
                "session_id": order.get("session_id"),
                "sales_channel": order.get("channel"),
                "status": order.get("status"),
                "placed_at": _utc(order.get("placed_at")),
                "shipping_fee": order.get("shipping_fee"),
            }
            for order in documents["orders"]
        ],
        {"order_id": pl.String, "order_number": pl.String, "customer_id": pl.String, "session_id": pl.String,
         "sales_channel": pl.String, "status": pl.String, "placed_at": TS, "shipping_fee": pl.Float64},
    )  # fmt: skip
    products = _frame(
        [
            {
                "product_id": _text(product["_id"]),
                "product_name": product.get("name"),
                "category": product.get("category"),
                "brand": product.get("brand"),
                "price": product.get("price"),
                "is_active": product.get("active"),
            }
            for product in documents["products"]
        ],
        {"product_id": pl.String, "product_name": pl.String, "category": pl.String, "brand": pl.String,
         "price": pl.Float64, "is_active": pl.Boolean},
    )  # fmt: skip
    categories = dict(zip(products["product_id"], products["category"], strict=True))
    items = _frame(
        [
            {
                "order_item_id": f"{order['_id']}-{index}",
                "order_id": _text(order["_id"]),
                "line_number": index,
                "product_id": item["sku"],
                "category": categories.get(item["sku"], "unknown"),
                "quantity": item["quantity"],
                "unit_price": _number(item["unit_price"]),
                "discount": _number(item.get("discount")) or 0.0,
                "line_revenue": item["quantity"] * _number(item["unit_price"]) - (_number(item.get("discount")) or 0.0),
                "order_status": order.get("status"),
                "sales_channel": order.get("channel"),
                "placed_at": _utc(order.get("placed_at")),
            }
            for order in documents["orders"]
            for index, item in enumerate(order.get("items") or [], start=1)
        ],
        {"order_item_id": pl.String, "order_id": pl.String, "line_number": pl.Int64, "product_id": pl.String,
         "category": pl.String, "quantity": pl.Int64, "unit_price": pl.Float64, "discount": pl.Float64,
         "line_revenue": pl.Float64, "order_status": pl.String, "sales_channel": pl.String, "placed_at": TS},
    ).with_columns(
        is_revenue=pl.col("order_status").is_in(REVENUE_STATUSES), order_date=pl.col("placed_at").dt.date()
    )  # fmt: skip
    customers = _frame(
        [
            {
                "customer_id": _text(customer["_id"]),
                "customer_number": customer.get("customer_number"),
                "email": customer.get("email"),
                "country": customer.get("country"),
                "segment": customer.get("segment"),
                "loyalty_tier": customer.get("loyalty_tier"),
                "signed_up_at": _utc(customer.get("created_at")),
            }
            for customer in documents["customers"]
        ],
        {"customer_id": pl.String, "customer_number": pl.String, "email": pl.String, "country": pl.String,
         "segment": pl.String, "loyalty_tier": pl.String, "signed_up_at": TS},
    )  # fmt: skip
    sessions = _frame(
        [
            {
                "session_id": _text(session["_id"]),
                "customer_id": _text(session.get("customer_id")),
                "started_at": _utc(session.get("started_at")),
                "traffic_source": f"{session.get('utm_source') or '(direct)'} / {session.get('utm_medium') or '(none)'}",
                "utm_campaign": session.get("utm_campaign"),
                "steps": [event["name"] for event in session.get("events") or []],
            }
            for session in documents["web_sessions"]
        ],
        {"session_id": pl.String, "customer_id": pl.String, "started_at": TS, "traffic_source": pl.String,
         "utm_campaign": pl.String, "steps": pl.List(pl.String)},
    )  # fmt: skip
    campaigns = _frame(
        [
            {
                "campaign_id": _text(campaign["_id"]),
                "campaign_name": campaign.get("name"),
                "channel": campaign.get("channel"),
                "utm_campaign": campaign.get("utm_campaign"),
                "status": campaign.get("status"),
                "start_date": _utc(campaign.get("start_date")).date(),
                "end_date": _utc(campaign.get("end_date")).date(),
            }
            for campaign in documents["campaigns"]
        ],
        {"campaign_id": pl.String, "campaign_name": pl.String, "channel": pl.String, "utm_campaign": pl.String,
         "status": pl.String, "start_date": pl.Date, "end_date": pl.Date},
    )  # fmt: skip
    spend = _frame(
        [
            (_text(row.get("campaign_id")), _number(row["spend"]), row.get("impressions"), row.get("clicks"))
            for row in documents["ad_spend"]
        ],
        {"campaign_id": pl.String, "spend": pl.Float64, "impressions": pl.Int64, "clicks": pl.Int64},
    )
    posts = _frame(
        [
            (_text(post.get("campaign_id")), _int(post.get("likes")), _int(post.get("comments")), _int(post.get("shares")))
            for post in documents["social_engagement"]
        ],
        {"campaign_id": pl.String, "likes": pl.Int64, "comments": pl.Int64, "shares": pl.Int64},
    )
    sessions = sessions.with_columns(
        campaign_id=pl.Series(
            [_campaign_of(row["utm_campaign"], row["started_at"], campaigns) for row in sessions.iter_rows(named=True)],
            dtype=pl.String,
        )
    )
    return {
        "orders": orders, "items": items, "products": products, "customers": customers,
        "sessions": sessions, "campaigns": campaigns, "spend": spend, "posts": posts,
    }  # fmt: skip


def _campaign_of(utm_campaign: str | None, started_at: datetime | None, campaigns: pl.DataFrame) -> str | None:
    """The one campaign a session resolves to: of those with its utm_campaign, the one that started
    last at or before the session (ties: the smaller id)."""
    if utm_campaign is None or started_at is None:
        return None
    started = [
        (row["start_date"], row["campaign_id"])
        for row in campaigns.iter_rows(named=True)
        if row["utm_campaign"] == utm_campaign and row["start_date"] <= started_at.date()
    ]
    if not started:
        return None
    latest = max(start for start, _ in started)
    return min(campaign for start, campaign in started if start == latest)


def order_facts(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Orders with value, revenue, first-order flag and last-touch campaign."""
    values = (
        frames["items"]
        .group_by("order_id")
        .agg(line_count=pl.len(), units=pl.col("quantity").sum(), order_value=pl.col("line_revenue").sum())
    )
    orders = (
        frames["orders"]
        .join(values, on="order_id", how="left")
        .with_columns(
            pl.col("line_count").fill_null(0),
            pl.col("units").fill_null(0),
            pl.col("order_value").fill_null(0.0),
            is_revenue=pl.col("status").is_in(REVENUE_STATUSES),
            order_date=pl.col("placed_at").dt.date(),
        )
        .with_columns(revenue=pl.when(pl.col("is_revenue")).then(pl.col("order_value")).otherwise(0.0))
    )
    firsts = (
        orders.filter(pl.col("is_revenue") & pl.col("customer_id").is_not_null())
        .sort("placed_at", "order_id")
        .group_by("customer_id", maintain_order=True)
        .agg(pl.col("order_id").first().alias("first_order_id"))
    )
    orders = orders.with_columns(is_first_order=pl.col("order_id").is_in(firsts["first_order_id"].implode()))
    touches = frames["sessions"].filter(pl.col("utm_campaign").is_not_null() & pl.col("customer_id").is_not_null())
    assert not touches.select("customer_id", "started_at").is_duplicated().any(), "ties would make last touch ambiguous"
    attributed = (
        orders.filter(pl.col("is_revenue") & pl.col("customer_id").is_not_null())
        .sort("placed_at")
        .join_asof(
            touches.select("customer_id", "started_at", pl.col("session_id").alias("touch_session_id"), "campaign_id").sort(
                "started_at"
            ),
            left_on="placed_at",
            right_on="started_at",
            by="customer_id",
            strategy="backward",
            tolerance=ATTRIBUTION_WINDOW,
            check_sortedness=False,  # sorted above; Polars cannot verify it per customer
        )
        .select("order_id", attributed_campaign_id="campaign_id", attributed_session_id="touch_session_id")
    )
    return orders.join(attributed, on="order_id", how="left")


def marts(bronze_root: str | Path, storage_options: dict[str, str] | None = None) -> dict[str, pl.DataFrame]:
    """Every gold mart, keyed by model name."""
    frames = source_frames(bronze_root, storage_options)
    orders = order_facts(frames)
    items = frames["items"]
    revenue_items = items.filter(pl.col("is_revenue"))
    daily_revenue = revenue_items.group_by("order_date", "sales_channel", "category").agg(
        orders=pl.col("order_id").n_unique(), units=pl.col("quantity").sum(), revenue=pl.col("line_revenue").sum()
    )

    revenue_orders = orders.filter(pl.col("is_revenue") & pl.col("customer_id").is_not_null())
    totals = revenue_orders.group_by("customer_id").agg(
        orders=pl.len(),
        lifetime_value=pl.col("revenue").sum(),
        first_order_at=pl.col("placed_at").min(),
        last_order_at=pl.col("placed_at").max(),
    )
    customers = (
        frames["customers"]
        .join(totals, on="customer_id", how="left")
        .with_columns(
            pl.col("orders").fill_null(0),
            pl.col("lifetime_value").fill_null(0.0),
            average_order_value=pl.col("lifetime_value") / pl.col("orders"),
            cohort_month=pl.col("first_order_at").dt.truncate("1mo").dt.date(),
        )
    )

    cohorts_of = revenue_orders.group_by("customer_id").agg(cohort_month=pl.col("placed_at").min().dt.truncate("1mo").dt.date())
    sizes = cohorts_of.group_by("cohort_month").agg(cohort_size=pl.len())
    customer_cohorts = (
        revenue_orders.join(cohorts_of, on="customer_id")
        .with_columns(
            months_since_first_order=(pl.col("placed_at").dt.year() * 12 + pl.col("placed_at").dt.month())
            - (pl.col("cohort_month").dt.year() * 12 + pl.col("cohort_month").dt.month())
        )
        .group_by("cohort_month", "months_since_first_order")
        .agg(active_customers=pl.col("customer_id").n_unique(), revenue=pl.col("revenue").sum())
        .join(sizes, on="cohort_month")
        .with_columns(retention_rate=pl.col("active_customers") / pl.col("cohort_size"))
    )

    sales = items.group_by("product_id").agg(
        units_sold=pl.col("quantity").filter(pl.col("is_revenue")).sum(),
        orders=pl.col("order_id").filter(pl.col("is_revenue")).n_unique(),
        revenue=pl.col("line_revenue").filter(pl.col("is_revenue")).sum(),
        refunded_units=pl.col("quantity").filter(pl.col("order_status") == "refunded").sum(),
        cancelled_units=pl.col("quantity").filter(pl.col("order_status") == "cancelled").sum(),
    )
    product_performance = (
        frames["products"]
        .join(sales, on="product_id", how="left")
        .with_columns(
            refund_rate=pl.when(pl.col("units_sold") + pl.col("refunded_units") > 0).then(
                pl.col("refunded_units") / (pl.col("units_sold") + pl.col("refunded_units"))
            ),
        )
        .with_columns(
            pl.col("units_sold").fill_null(0),
            pl.col("orders").fill_null(0),
            pl.col("revenue").fill_null(0.0),
            pl.col("refunded_units").fill_null(0),
            pl.col("cancelled_units").fill_null(0),
        )
    )

    sessions = frames["sessions"].with_columns(
        session_date=pl.col("started_at").dt.date(),
        viewed_item=pl.col("steps").list.contains("view_item"),
        added_to_cart=pl.col("steps").list.contains("add_to_cart"),
        began_checkout=pl.col("steps").list.contains("begin_checkout"),
        purchased=pl.col("steps").list.contains("purchase"),
    )
    conversion_funnel = sessions.group_by("session_date", "traffic_source").agg(
        sessions=pl.len(),
        viewed_item=pl.col("viewed_item").sum(),
        added_to_cart=pl.col("added_to_cart").sum(),
        began_checkout=pl.col("began_checkout").sum(),
        purchased=pl.col("purchased").sum(),
        conversion_rate=pl.col("purchased").sum() / pl.len(),
    )

    spend = (
        frames["spend"]
        .group_by("campaign_id")
        .agg(spend=pl.col("spend").sum(), impressions=pl.col("impressions").sum(), clicks=pl.col("clicks").sum())
    )
    traffic = sessions.filter(pl.col("campaign_id").is_not_null()).group_by("campaign_id").agg(sessions=pl.len())
    conversions = (
        orders.filter(pl.col("attributed_campaign_id").is_not_null())
        .group_by("attributed_campaign_id")
        .agg(conversions=pl.len(), new_customers=pl.col("is_first_order").sum(), attributed_revenue=pl.col("revenue").sum())
        .rename({"attributed_campaign_id": "campaign_id"})
    )
    social = (
        frames["posts"]
        .filter(pl.col("campaign_id").is_not_null())
        .group_by("campaign_id")
        .agg(
            social_posts=pl.len(),
            social_engagements=(
                pl.col("likes").fill_null(0) + pl.col("comments").fill_null(0) + pl.col("shares").fill_null(0)
            ).sum(),
        )
    )
    campaign_performance = (
        frames["campaigns"]
        .join(spend, on="campaign_id", how="left")
        .join(traffic, on="campaign_id", how="left")
        .join(conversions, on="campaign_id", how="left")
        .join(social, on="campaign_id", how="left")
        .with_columns(
            roas=pl.when(pl.col("spend") > 0).then(pl.col("attributed_revenue") / pl.col("spend")),
            cac=pl.when(pl.col("new_customers") > 0).then(pl.col("spend") / pl.col("new_customers")),
        )
        .with_columns(
            pl.col("spend").fill_null(0.0),
            pl.col("impressions").fill_null(0),
            pl.col("clicks").fill_null(0),
            pl.col("sessions").fill_null(0),
            pl.col("conversions").fill_null(0),
            pl.col("new_customers").fill_null(0),
            pl.col("attributed_revenue").fill_null(0.0),
            pl.col("social_posts").fill_null(0),
            pl.col("social_engagements").fill_null(0),
        )
    )
    return {
        "orders": orders.drop("is_revenue").with_columns(is_revenue=pl.col("status").is_in(REVENUE_STATUSES)),
        "daily_revenue": daily_revenue,
        "customers": customers,
        "customer_cohorts": customer_cohorts,
        "product_performance": product_performance,
        "conversion_funnel": conversion_funnel,
        "campaign_performance": campaign_performance,
    }


KEYS = {
    "orders": ["order_id"],
    "daily_revenue": ["order_date", "sales_channel", "category"],
    "customers": ["customer_id"],
    "customer_cohorts": ["cohort_month", "months_since_first_order"],
    "product_performance": ["product_id"],
    "conversion_funnel": ["session_date", "traffic_source"],
    "campaign_performance": ["campaign_id"],
}

__all__ = ["KEYS", "current_documents", "marts", "source_frames"]
