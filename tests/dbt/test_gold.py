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
