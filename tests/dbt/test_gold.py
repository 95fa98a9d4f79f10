"""Every gold figure equals an independent computation in Polars on the same bronze input."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

MARTS = (
    "orders",
    "daily_revenue",
    "customers",
    "customer_cohorts",
    "product_performance",
    "conversion_funnel",
    "campaign_performance",
)


@pytest.mark.parametrize("mart", MARTS)
def test_mart_equals_the_polars_computation(built_lake, dbt_reference, mart: str) -> None:
    keys = dbt_reference.KEYS[mart]
    actual = built_lake.gold[mart]
    expected = built_lake.expected_gold[mart]
    columns = [column for column in actual.columns if column in expected.columns]
    assert columns == actual.columns, f"columns the reference does not compute: {set(actual.columns) - set(columns)}"
    assert actual.height > 0
    assert_frame_equal(
        actual.select(columns).sort(keys),
        expected.select(columns).sort(keys),
        check_dtypes=False,
        check_column_order=False,
        rel_tol=1e-9,
        abs_tol=1e-6,
    )


def test_the_marts_are_not_trivial(built_lake) -> None:
    campaigns = built_lake.gold["campaign_performance"]
    assert campaigns.filter(pl.col("conversions") > 0).height > 0, "some orders are attributed to campaigns"
    assert campaigns["roas"].drop_nulls().len() > 0 and campaigns["cac"].drop_nulls().len() > 0
    assert built_lake.gold["customer_cohorts"]["months_since_first_order"].max() >= 1
    assert built_lake.gold["product_performance"]["refunded_units"].sum() > 0
    assert set(built_lake.gold["orders"]["status"]) >= {"placed", "paid", "shipped", "delivered", "cancelled", "refunded"}


def test_the_review_cases_reach_the_marts(built_lake) -> None:
    """Each once went wrong in gold: a shared utm_campaign fanned out, paid and organic Google
    traffic merged, a missing share count nulled the engagement, a Decimal128 price parsed to
    null, a fraction in a long column was lost, and an _id's numeric type decided the join."""
    review, gold = built_lake.review, built_lake.gold
    campaigns = gold["campaign_performance"]
    sessions = built_lake.silver["stg_mongo__web_sessions"]
    shared = campaigns.filter(pl.col("campaign_id") == review.shared_utm_campaign_id).row(0, named=True)
    with_utm = sessions.filter(pl.col("utm_campaign") == shared["utm_campaign"]).height
    assert campaigns.filter(pl.col("utm_campaign") == shared["utm_campaign"])["sessions"].sum() == with_utm
    assert gold["orders"]["order_id"].is_unique().all()
    assert {"google / cpc", "google / organic", "(direct) / (none)"} <= set(gold["conversion_funnel"]["traffic_source"])
    post = built_lake.state["social_engagement"][f'"{review.post_without_shares_id}"']
    engagements = campaigns.filter(pl.col("campaign_id") == post["campaign_id"])["social_engagements"].item()
    assert engagements >= 12 + post["comments"], "the post without shares counts its likes and comments"
    orders = gold["orders"]
    assert orders.filter(pl.col("order_id") == review.decimal_order_id)["revenue"].item() == pytest.approx(2 * 19.90 - 1.50)
    spend = sum(float(document["spend"]) for document in built_lake.state["ad_spend"].values())
    assert campaigns["spend"].sum() == pytest.approx(spend), "rescued fractions of a long column count"
    customer = gold["customers"].filter(pl.col("customer_id") == str(int(review.long_id_customer_id))).row(0, named=True)
    ordered = orders.filter(pl.col("order_id") == review.double_reference_order_id).row(0, named=True)
    assert ordered["customer_id"] == customer["customer_id"] and customer["orders"] == 1
    assert customer["lifetime_value"] == pytest.approx(ordered["revenue"]) and ordered["revenue"] > 0
