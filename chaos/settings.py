"""The harness's knobs: ``CHAOS_*`` environment variables or ``lakehouse-chaos`` options.

The defaults are the full run (``make chaos``): 50 fault cycles per delivery mode. The test
suite runs the same harness with a few cycles (tests/chaos). Settings that the services
need to make progress under chaos are set in their environment by the harness
(``chaos.pipeline``) and listed in docs/chaos.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from cdc_service.settings import DeliveryMode
from lakehouse_common.settings import ServiceSettings
from local_stack.paths import PROJECT_ROOT


class ChaosSettings(ServiceSettings):
    """Everything ``lakehouse-chaos`` needs; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="CHAOS_")

    work_dir: Path = Field(
        PROJECT_ROOT / "build" / "chaos",
        description="Where the run keeps its stack, lakes and logs, and writes result.json (emptied at start).",
    )
    modes: list[DeliveryMode] = Field(
        default_factory=lambda: [DeliveryMode.AT_LEAST_ONCE, DeliveryMode.EXACTLY_ONCE],
        description="cdc-service delivery modes to run, one lane each (JSON list in the environment).",
    )
    parallel: bool = Field(
        True, description="Run the delivery modes side by side through the same faults (false: one mode after the other)."
    )
    cycles: int = Field(50, ge=1, description="Fault cycles per delivery mode (each victim gets an equal share).")
    seed: int | None = Field(None, description="Random seed of the fault schedule and the workload; unset: a new one, printed.")
    collections: list[str] = Field(
        default_factory=lambda: ["customers", "products", "orders"],
        description="Collections the workload writes; silver models must exist for them (dbt/models/staging/mongo).",
    )
    seed_documents: int = Field(
        200,
        ge=1,
        description="Documents per collection written before cdc-service starts (its initial snapshot copies them; "
        "at least one, so the collections and their streams exist from the start).",
    )
    rate: float = Field(40.0, gt=0, description="Workload writes per second (inserts, updates, replaces, deletes).")
    dwell_min_seconds: float = Field(1.0, ge=0, description="Shortest time the pipeline runs undisturbed between two faults.")
    dwell_max_seconds: float = Field(5.0, ge=0, description="Longest time the pipeline runs undisturbed between two faults.")
    down_max_seconds: float = Field(2.0, ge=0, description="Longest time a killed process stays down before its restart.")
    early_fault_probability: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Chance that the next fault comes before bronze has recovered from the last one (a kill during start-up).",
    )
    recovery_timeout_seconds: float = Field(
        120.0, gt=0, description="How long bronze may take to land a write made after a fault before the cycle records no progress."
    )
    delivery_timeout_ms: int = Field(
        5000, ge=1000, description="cdc-service's producer delivery timeout during the run; a broker pause outlasts it."
    )
    pause_margin_seconds: float = Field(
        3.0, gt=0.2, description="A broker pause lasts the delivery timeout plus up to this much (at random)."
    )
    settle_quiet_seconds: float = Field(
        60.0, gt=0, description="After the last fault: give up waiting for missing writes once bronze has not grown for this long."
    )
    settle_timeout_seconds: float = Field(600.0, gt=0, description="After the last fault: the longest wait for bronze to hold every write.")
    static_membership: bool = Field(
        True, description="Run bronze-writer with a group.instance.id, so a restarted writer takes its partitions back at once."
    )
    writer_session_timeout_ms: int = Field(
        10000, ge=6000, description="bronze-writer's consumer session timeout during the run."
    )
    cdc_retry_max_backoff_s: float = Field(
        5.0, gt=0, description="cdc-service's longest pause between pipeline restarts during the run."
    )
    silver: bool = Field(True, description="Build silver with dbt after each mode and compare it with MongoDB.")
    spark_driver_memory: str = Field("1g", description="Driver memory of dbt's Spark session.")
    kafka_heap: str = Field("512m", description="Heap of the Kafka broker the run starts.")
    standin_heap: str = Field("512m", description="Heap of the MongoDB stand-in the run starts.")

    @model_validator(mode="after")
    def _consistent(self) -> ChaosSettings:
        if self.dwell_max_seconds < self.dwell_min_seconds:
            raise ValueError("dwell_max_seconds must not be below dwell_min_seconds")
        if not self.modes:
            raise ValueError("modes must name at least one delivery mode")
        if not self.collections:
            raise ValueError("collections must name at least one collection")
        return self

    @property
    def result_file(self) -> Path:
        return self.work_dir / "result.json"


__all__ = ["ChaosSettings"]
