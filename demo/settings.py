"""The demo's knobs: environment variables prefixed ``DEMO_`` or ``lakehouse-demo`` options.

``MONGO_URI`` (no prefix, as ``make stack-up`` reads it) points the demo at a real MongoDB
replica set instead of the stand-in. ``kafka_bootstrap_servers`` and ``standin_uri`` let it
use a broker and a stand-in that already run (the test suite's), instead of starting them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from lakehouse_common.settings import ServiceSettings
from local_stack.paths import PROJECT_ROOT


class DemoSettings(ServiceSettings):
    """Everything ``lakehouse-demo`` needs; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="DEMO_")

    work_dir: Path = Field(
        PROJECT_ROOT / "build" / "demo",
        description="Where the demo keeps its lake, logs, stack state and summary.json (emptied at start).",
    )
    database: str = Field(
        "lakehouse_demo",
        description="MongoDB database the generator fills and cdc-service captures (dropped and reloaded at start).",
    )
    scale: float = Field(1.0, gt=0, description="Generator size factor (1.0: about 11k initial documents).")
    seed: int = Field(42, description="Generator seed: the same seed gives the same data.")
    rate: float = Field(40.0, gt=0, description="Changes per second the generator applies while the pipeline runs.")
    duration_seconds: float = Field(60.0, ge=0, description="How long the generator keeps changing data.")
    catch_up_timeout_seconds: float = Field(
        300.0, gt=0, description="How long to wait for bronze to hold everything MongoDB holds."
    )
    dbt_commands: list[str] = Field(
        default_factory=lambda: ["build"],
        description="dbt commands the runner runs after bronze caught up (JSON list in the environment).",
    )
    dbt_interval_minutes: float = Field(
        2.0, gt=0, description="With --keep-running: minutes between dbt rebuilds (spark-jobs dbt --every)."
    )
    spark_driver_memory: str = Field("2g", description="Driver memory of dbt's Spark session.")
    spark_driver_java_options: str = Field(
        "", description="Extra JVM options of dbt's Spark driver."
    )
    lake: Literal["local", "s3"] = Field(
        "local",
        description="Where the lake lives: a local directory (work_dir/lake), or s3: a bucket of the local stack's "
        "S3-compatible object store (SeaweedFS), started for the run.",
    )
    keep_running: bool = Field(False, description="Keep the pipeline live (generator, services, dbt loop) until Ctrl-C.")
    mongo_uri: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("MONGO_URI", "DEMO_MONGO_URI"),
        description="A real MongoDB replica set to use instead of the stand-in (never printed unredacted).",
    )
    standin_uri: str | None = Field(
        None, description="A MongoDB stand-in that already runs (tests); default: start one."
    )
    kafka_bootstrap_servers: str | None = Field(
        None, description="A Kafka broker that already runs (tests); default: start one."
    )

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def lake_root(self) -> Path:
        """The local lake's directory (``lake=local``; with s3 the lake is in the object store)."""
        return self.work_dir / "lake"

    @property
    def summary_file(self) -> Path:
        return self.work_dir / "summary.json"

    @property
    def env_file(self) -> Path:
        return self.work_dir / "demo.env"


__all__ = ["DemoSettings"]
