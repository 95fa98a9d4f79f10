"""Settings of ``spark-jobs``: the lake, Spark, the dbt runner and table maintenance.

Environment variables use the prefix ``SPARK_JOBS_`` and ``__`` for nesting, for example
``SPARK_JOBS_LAKE_ROOT=/data/lake``, ``SPARK_JOBS_SPARK__MASTER=spark://host:7077``,
``SPARK_JOBS_DBT__INTERVAL_MINUTES=15``, ``SPARK_JOBS_MAINTENANCE__RETENTION_HOURS=72``,
``SPARK_JOBS_VERIFY__MONGO_URI=mongodb://...``.
A YAML file (``--config``) gives the same keys.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from lakehouse_common.object_store import canonical_options, is_s3
from lakehouse_common.paths import SOURCE_ROOT
from lakehouse_common.settings import FrozenModel, ServiceSettings
from spark_jobs.session import SparkSettings

Layer = Literal["bronze", "silver", "gold"]
ALL_LAYERS: tuple[Layer, ...] = ("bronze", "silver", "gold")


def _default_dbt_executable() -> str:
    """The dbt installed beside this Python (the venv's), else whatever ``dbt`` is on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


class DbtSettings(FrozenModel):
    """How the runner invokes dbt."""

    executable: str = Field(default_factory=_default_dbt_executable, description="The dbt executable.")
    project_dir: Path = Field(SOURCE_ROOT / "dbt", description="The dbt project.")
    profiles_dir: Path = Field(SOURCE_ROOT / "dbt", description="Directory of profiles.yml.")
    target: str = Field("local", description="Profile target: local (Spark session), cluster (thrift) or cluster_http.")
    commands: list[str] = Field(
        default_factory=lambda: ["source freshness", "build"],
        description="dbt commands to run, in order, each as on the command line (for example 'build --select silver').",
    )
    keep_going: bool = Field(
        True,
        description="Run the remaining commands after one fails (a stale source still gets built); the exit status is the first failure's.",
    )
    target_path: Path = Field(SOURCE_ROOT / "build" / "dbt" / "target", description="dbt's target directory (run_results.json).")
    log_path: Path = Field(SOURCE_ROOT / "build" / "dbt" / "logs", description="dbt's log directory.")
    log_format: Literal["json", "text"] = Field(
        "json", description="dbt's console format; json lines become structured log records."
    )
    threads: int | None = Field(None, ge=1, description="dbt threads (DBT_THREADS); the profile's default is 4.")
    mongo_database: str = Field("shop", description="The MongoDB database bronze holds (var mongo_database).")
    silver_deletes: Literal["remove", "flag"] = Field("remove", description="Deleted documents in silver: remove or flag.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Extra dbt vars (passed as --vars).")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for dbt (for example SPARK_THRIFT_HOST for the cluster target)."
    )
    spark_conf_dir: Path = Field(
        SOURCE_ROOT / "build" / "spark-conf", description="Where spark-defaults.conf for dbt's Spark session is written."
    )
    interval_minutes: float | None = Field(
        None, gt=0, description="Run the commands every this many minutes; unset runs them once (a Kubernetes CronJob)."
    )
    stop_timeout_seconds: float = Field(60.0, gt=0, description="Grace period for dbt after a stop request, then it is killed.")


class MaintenanceSettings(FrozenModel):
    """Compaction and vacuum of the lake's Delta tables."""

    layers: list[Layer] = Field(default_factory=lambda: list(ALL_LAYERS), description="Layers to maintain.")
    retention_hours: float = Field(
        168.0, ge=0, description="VACUUM keeps files younger than this; below 168 h, readers of old versions may fail."
    )
    zorder_by: dict[str, list[str]] = Field(
        default_factory=lambda: {
            # Incremental silver runs read bronze by ingestion time: clustering on it lets
            # Delta skip every file older than the last run.
            "bronze/*/*": ["__ingested_at"],
            # Silver recomputes the documents a run touches: cluster their rows together.
            "silver/stg_mongo__*": ["__document_id"],
        },
        description="Z-ORDER columns per table, by glob on '<layer>/<path below the layer>'; first match wins, no match means plain compaction.",
    )


class VerifySettings(FrozenModel):
    """``spark-jobs verify``: which MongoDB to compare silver with."""

    mongo_uri: SecretStr | None = Field(
        None, description="MongoDB connection string to read the documents from (or --mongo-uri); secret."
    )
    database: str | None = Field(None, description="The MongoDB database; unset means dbt.mongo_database.")
    collections: list[str] = Field(
        default_factory=list, description="Collections to compare; empty means every collection with a silver table."
    )
    examples: int = Field(10, ge=0, description="Ids listed per collection and kind of difference.")
    server_selection_timeout_seconds: float = Field(
        15.0, gt=0, description="How long to wait for MongoDB to answer before giving up."
    )


class SparkJobsSettings(ServiceSettings):
    """Everything ``spark-jobs`` needs."""

    model_config = SettingsConfigDict(env_prefix="SPARK_JOBS_")

    lake_root: str = Field(str(SOURCE_ROOT / "build" / "lake"), description="Lake root: a local path or an object-store URI.")
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Object-store options of the lake in deltalake's names (AWS_ENDPOINT_URL, AWS_REGION, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP, AWS_VIRTUAL_HOSTED_STYLE_REQUEST); Spark gets "
        "them as S3A properties, the counts as deltalake options; secret.",
    )
    spark: SparkSettings = Field(default_factory=SparkSettings, description="Spark for dbt and the jobs.")
    dbt: DbtSettings = Field(default_factory=DbtSettings, description="The dbt runner.")
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings, description="Table maintenance.")
    verify: VerifySettings = Field(default_factory=VerifySettings, description="MongoDB against silver (spark-jobs verify).")

    @field_validator("storage_options", mode="before")
    @classmethod
    def _canonical_keys(cls, value: Any) -> Any:
        return canonical_options(value) if isinstance(value, dict) else value

    def object_store_options(self) -> dict[str, str] | None:
        """The lake's storage options, secrets revealed, when the lake is on S3; None for a local lake."""
        if not is_s3(self.lake_root):
            return None
        return {key: value.get_secret_value() for key, value in self.storage_options.items()}


__all__ = ["DbtSettings", "Layer", "MaintenanceSettings", "SparkJobsSettings", "VerifySettings"]
