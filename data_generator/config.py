"""How big the dataset is, where its timeline starts, and how fast it drifts."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field

from lakehouse_common.settings import FrozenModel

COLLECTIONS = (
    "customers",
    "products",
    "orders",
    "campaigns",
    "ad_spend",
    "web_sessions",
    "social_engagement",
)
"""Every collection the generator writes, in the order the initial load fills them."""

DRIFT_STEPS = (
    "customers.loyalty_tier added",
    "customers.fax removed",
    "customers.zip_code int -> string",
    "orders.shipping.address.geo added",
)
"""The schema drift, in order: one step every ``drift_every`` changes."""


class GeneratorConfig(FrozenModel):
    """Everything that determines the generated data: the same config gives the same data."""

    seed: int = Field(42, description="Random seed: the whole dataset and change stream follow from it.")
    scale: float = Field(
        1.0, gt=0, description="Size factor: 1.0 is about 11k initial documents (2,000 customers, 60 days of traffic)."
    )
    start: datetime = Field(datetime(2025, 1, 1, tzinfo=UTC), description="First day of the simulated history (UTC).")
    history_days: int = Field(60, ge=1, description="Days of history in the initial load.")
    drift_every: int = Field(2000, ge=1, description="Changes between two schema-drift steps (four steps, see DRIFT_STEPS).")
    mean_seconds_between_changes: float | None = Field(
        None,
        gt=0,
        description="Simulated seconds between two changes after the initial load; default: the history's daily volume.",
    )


__all__ = ["COLLECTIONS", "DRIFT_STEPS", "GeneratorConfig"]
