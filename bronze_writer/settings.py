"""bronze_writer's configuration: env vars (``BRONZE_`` prefix, ``__`` for nesting) and/or YAML.

Example: ``BRONZE_KAFKA__BOOTSTRAP_SERVERS=broker:9092``, ``BRONZE_LAKE__ROOT=s3://bucket/lake``,
``BRONZE_BATCH__MAX_ROWS=50000``. Everything is validated at start (``load_settings``).
"""

from __future__ import annotations

import re
import socket
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from lakehouse_common.object_store import canonical_options, commit_safety_problem, with_safe_commits
from lakehouse_common.settings import FrozenModel, KafkaSettings, ServiceSettings


class ConsumerSettings(FrozenModel):
    """Which topics to read and how to map them to bronze tables."""

    group_id: str = Field("bronze-writer", description="Kafka consumer group; replicas share its partitions.")
    topic_pattern: str = Field(
        r"^cdc\.[^.]+\..+",
        description="Regular expression of the topics to subscribe to: <prefix>.<db>.<collection> (two dots at "
        "least, so cdc_service's cdc.checkpoints and cdc.dead-letters stay out).",
    )
    topic_prefix: str = Field(
        "cdc", description="The prefix cdc_service puts before <db>.<collection> in topic names ('' for none)."
    )
    topic_tables: dict[str, str] = Field(
        default_factory=dict,
        description="Topic -> '<db>.<collection>' for topics that do not follow the <prefix>.<db>.<collection> naming.",
    )
    start_offset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where to start partitions that no bronze commit has recorded yet."
    )
    fetch_queue_max_kbytes: int = Field(
        65536, ge=1024, description="librdkafka prefetch bound (queued.max.messages.kbytes), part of the memory bound."
    )
    session_timeout_ms: int = Field(30000, ge=6000, description="Kafka group session timeout.")
    group_instance_id: str | None = Field(
        None,
        description="Static group membership (e.g. the pod name of a StatefulSet): a restarted replica takes its "
        "partitions back at once instead of waiting for the session timeout and a rebalance.",
    )
    offset_discontinuity: Literal["fail", "accept"] = Field(
        "fail",
        description="When a partition's offsets do not continue from what bronze landed (topic recreated, retention "
        "overran a stopped writer, another cluster): 'fail' stops with the reset-offsets command to run, 'accept' "
        "records the reset and lands from the partition's first available offset. Logged at ERROR either way.",
    )

    @field_validator("topic_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    @field_validator("topic_tables")
    @classmethod
    def _tables_are_namespaces(cls, value: dict[str, str]) -> dict[str, str]:
        for topic, namespace in value.items():
            if "." not in namespace.strip("."):
                raise ValueError(f"topic {topic!r} maps to {namespace!r}; expected '<db>.<collection>'")
        return value


class BatchSettings(FrozenModel):
    """When a micro-batch is flushed: whichever limit is reached first."""

    max_latency_seconds: float = Field(5.0, gt=0, description="Flush at most this long after a batch's first message.")
    max_rows: int = Field(100_000, ge=1, description="Flush at this many messages.")
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Flush at this many value bytes; bounds the writer's batch memory."
    )


class LakeSettings(FrozenModel):
    """Where the bronze tables live and how files are written."""

    root: str = Field(
        "build/lake",
        description="Lake root: a local path (relative to the working directory) or an object-store URI (s3://...).",
    )
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="deltalake storage options (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_ALLOW_HTTP, ...; keys case-insensitive); secret. On S3 commits are conditional writes "
        "(AWS_CONDITIONAL_PUT=etag, set when absent); options that would allow unsafe commits are refused.",
    )
    target_file_size: int = Field(
        128 * 1024 * 1024, ge=1024 * 1024, description="Target Parquet file size for writes and compaction."
    )
    compression: Literal["SNAPPY", "ZSTD", "LZ4_RAW", "GZIP", "UNCOMPRESSED"] = Field(
        "SNAPPY", description="Parquet compression codec."
    )
    max_commit_attempts: int = Field(50, ge=1, description="Attempts per bronze commit when other writers commit concurrently.")
    checkpoint_interval_commits: int = Field(
        100,
        ge=1,
        description="Checkpoint a bronze table's Delta log after every this many commits (deltalake's create_checkpoint): "
        "a snapshot is loaded from its last checkpoint, so a long log costs neither start-up time nor memory.",
    )
    dedupe_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Memory for the event ids of files read by the exact dedupe (ids at or below a partition's mark); "
        "files never change, so each is read once while it stays cached.",
    )

    @field_validator("storage_options", mode="before")
    @classmethod
    def _canonical_keys(cls, value: Any) -> Any:
        return canonical_options(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _commits_are_safe(self) -> LakeSettings:
        problem = commit_safety_problem(self.root, self._revealed())
        if problem is not None:
            raise ValueError(problem)
        return self

    def _revealed(self) -> dict[str, str]:
        return {key: value.get_secret_value() for key, value in self.storage_options.items()}

    def deltalake_options(self) -> dict[str, str]:
        """The storage options as deltalake takes them, secrets revealed, conditional commits on for S3."""
        return with_safe_commits(self.root, self._revealed())


class MaintenanceSettings(FrozenModel):
    """Compaction and vacuum on a schedule inside ``bronze-writer run`` (0 disables)."""

    compact_interval_seconds: float = Field(0, ge=0, description="Compact every bronze table this often (0: never).")
    vacuum_interval_seconds: float = Field(0, ge=0, description="Vacuum every bronze table this often (0: never).")
    vacuum_retention_hours: int = Field(168, ge=0, description="Keep files removed less than this long ago.")
    claim_retention_hours: int = Field(
        168,
        ge=0,
        description="Vacuum deletes a claim (an event too large for its topic, kept under <lake root>/claims) once "
        "bronze has marked it landed and both claim and mark are older than this: it covers re-reads of the record.",
    )
    orphan_claim_retention_hours: int | None = Field(
        None,
        ge=0,
        description="Vacuum also deletes claims bronze never marked landed once they are this old; set it above the "
        "CDC topics' retention (no record can reference them then). Unset: they are kept, and counted.",
    )


class BronzeSettings(ServiceSettings):
    """Everything ``bronze-writer`` reads at start."""

    model_config = SettingsConfigDict(env_prefix="BRONZE_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka cluster.")
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings, description="Topics and consumer group.")
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Micro-batch limits.")
    lake: LakeSettings = Field(default_factory=LakeSettings, description="Lake location and file layout.")
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings, description="Scheduled maintenance.")
    writer_id: str | None = Field(None, description="This replica's name in the ingest log and commit info (default: host name).")
    landing_retry_seconds: float = Field(
        300, gt=0, description="How long a batch's storage errors are retried (partitions paused) before the writer stops."
    )

    @property
    def replica_name(self) -> str:
        return self.writer_id or socket.gethostname()


__all__ = [
    "BatchSettings",
    "BronzeSettings",
    "ConsumerSettings",
    "LakeSettings",
    "MaintenanceSettings",
]
