"""The service's configuration: env vars prefixed ``CDC_`` (nested with ``__``) and/or a YAML file.

Every field is validated when the service starts; a bad value stops it with one line per
problem naming the environment variable that sets it (``lakehouse_common.settings``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from lakehouse_common.contract import ValueFormat, check_topic_mapping
from lakehouse_common.settings import FrozenModel, KafkaSettings, ServiceSettings


class FullDocumentMode(StrEnum):
    """``fullDocument`` of the change stream (MongoDB's names)."""

    DEFAULT = "default"
    UPDATE_LOOKUP = "updateLookup"
    WHEN_AVAILABLE = "whenAvailable"
    REQUIRED = "required"


class PreImageMode(StrEnum):
    """``fullDocumentBeforeChange``: pre-images exist only where the collection records them."""

    OFF = "off"
    WHEN_AVAILABLE = "whenAvailable"
    REQUIRED = "required"


class StreamLayout(StrEnum):
    """How the scope maps onto change streams.

    ``deployment``: one cluster-wide stream filtered by namespace (real replica sets and
    sharded clusters); ``database``: one stream per database; ``collection``: one stream per
    collection (what the MongoDB stand-in supports); ``auto``: ``database`` or ``deployment``
    on a replica set or mongos, ``collection`` elsewhere.
    """

    AUTO = "auto"
    DEPLOYMENT = "deployment"
    DATABASE = "database"
    COLLECTION = "collection"


class DeliveryMode(StrEnum):
    """``at_least_once``: idempotent producer, checkpoint after acknowledgement; ``exactly_once``:
    events and checkpoint in one Kafka transaction."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class HistoryLostPolicy(StrEnum):
    """What to do when the resume point is no longer in the oplog (codes 286, 260, 280)."""

    FAIL = "fail"
    RESNAPSHOT = "resnapshot"


class SnapshotMode(StrEnum):
    """``initial``: copy existing documents when a stream has no checkpoint; ``never``: stream only."""

    INITIAL = "initial"
    NEVER = "never"


# Stages a change stream accepts that cannot touch an event's _id (the resume token); of the
# others MongoDB allows, $replaceRoot, $replaceWith and $redact can drop or rewrite it.
_TOKEN_SAFE_STAGES = ("$match", "$project", "$addFields", "$set", "$unset")
_TOKEN_REWRITING_STAGES = ("$replaceRoot", "$replaceWith", "$redact")


def _touches_id(path: str) -> bool:
    return path == "_id" or path.startswith("_id.")


def resume_token_problem(stage: dict[str, Any]) -> str | None:
    """Why a user stage would change the events' ``_id``, or None when it keeps it.

    MongoDB fails such a stream with error 280 (ChangeStreamFatalError), the code it also
    uses for some lost resume points: refused here, the setting is named at start instead.
    """
    operator, body = next(iter(stage.items()))
    keep = "; the events' _id is their resume token and must pass unchanged"
    if operator in _TOKEN_REWRITING_STAGES:
        return f"{operator} may replace or prune the events' _id{keep} (use $project, $set or $unset)"
    if operator not in _TOKEN_SAFE_STAGES:
        return (
            f"stage {operator} is not allowed in a change stream pipeline here (allowed: "
            f"{', '.join(_TOKEN_SAFE_STAGES)}, which keep _id)"
        )
    if operator == "$unset":
        paths = [body] if isinstance(body, str) else list(body) if isinstance(body, list) else []
        if any(isinstance(path, str) and _touches_id(path) for path in paths):
            return f"$unset removes _id{keep}"
    elif operator in ("$addFields", "$set"):
        if isinstance(body, dict) and any(_touches_id(path) for path in body):
            return f"{operator} sets _id{keep}"
    elif operator == "$project" and isinstance(body, dict):
        for path, value in body.items():
            if path.startswith("_id."):
                return f"$project of {path!r} changes _id{keep}"
            if path == "_id" and value not in (1, True):
                return f"$project of _id as {value!r} changes _id{keep} (leave _id out or project it as 1)"
    return None


def _check_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        if is_regex_pattern(pattern):
            try:
                re.compile(pattern[1:-1])
            except re.error as error:
                raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
        elif not pattern:
            raise ValueError("empty name in a scope list")
    return patterns


def is_regex_pattern(pattern: str) -> bool:
    """``/.../`` is a regular expression (matched in full); anything else an exact name."""
    return len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/")


class ScopeSettings(FrozenModel):
    """What to capture. Names are exact; ``/regex/`` entries are regular expressions matched in full.

    Databases ``admin``, ``local`` and ``config`` and ``system.*`` collections are never captured.
    """

    include_databases: list[str] = Field(default_factory=list, description="Databases to capture; empty means all.")
    exclude_databases: list[str] = Field(default_factory=list, description="Databases never captured.")
    include_collections: list[str] = Field(
        default_factory=list, description="Namespaces (db.collection) to capture; empty means every one in the databases."
    )
    exclude_collections: list[str] = Field(default_factory=list, description="Namespaces (db.collection) never captured.")

    _validate = field_validator(
        "include_databases", "exclude_databases", "include_collections", "exclude_collections"
    )(_check_patterns)


class StreamSettings(FrozenModel):
    """How change streams are opened."""

    layout: StreamLayout = Field(StreamLayout.AUTO, description="deployment, database, collection or auto.")
    full_document: FullDocumentMode = Field(
        FullDocumentMode.UPDATE_LOOKUP, description="fullDocument: default, updateLookup, whenAvailable or required."
    )
    full_document_before_change: PreImageMode = Field(
        PreImageMode.OFF, description="Pre-images: off, whenAvailable or required (needs changeStreamPreAndPostImages)."
    )
    split_large_events: bool = Field(
        True, description="Append $changeStreamSplitLargeEvent (MongoDB 7+/6.0.9+) and reassemble fragments."
    )
    show_expanded_events: bool = Field(False, description="showExpandedEvents (create, modify, ... events; MongoDB 6+).")
    pipeline: list[dict[str, Any]] = Field(
        default_factory=list,
        description="User stages appended to the change stream: $match, $project, $addFields, $set, $unset; none may change _id.",
    )
    batch_size: int = Field(1000, ge=1, description="Events per getMore batch.")
    max_await_ms: int = Field(1000, ge=10, description="How long a getMore waits for events on the server.")
    idle_poll_interval_s: float = Field(
        0.2, gt=0, description="Pause after an empty batch when the server does not wait (the stand-in)."
    )
    discovery_interval_s: float = Field(
        10.0, gt=0, description="How often new databases/collections are looked for (database/collection layouts)."
    )

    @field_validator("pipeline")
    @classmethod
    def _stages_keep_the_resume_token(cls, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for stage in stages:
            if len(stage) != 1 or not next(iter(stage)).startswith("$"):
                raise ValueError(f"pipeline stage {stage!r} must be a single $operator document")
            if "$changeStreamSplitLargeEvent" in stage:
                raise ValueError("use stream.split_large_events instead of a $changeStreamSplitLargeEvent stage")
            problem = resume_token_problem(stage)
            if problem is not None:
                raise ValueError(problem)
        return stages


class TopicSettings(FrozenModel):
    """Where events go: a topic per collection."""

    prefix: str = Field("cdc", description="Topic prefix: <prefix>.<db>.<collection>.")
    mapping: dict[str, str] = Field(default_factory=dict, description="Namespace (db.collection) -> topic overrides.")
    partitions: int = Field(3, ge=1, description="Partitions of topics the service creates.")
    replication_factor: int = Field(-1, ge=-1, description="Replication of created topics; -1 = broker default.")
    max_message_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="max.message.bytes of created topics (holds a 16 MB document plus envelope)."
    )
    config: dict[str, str] = Field(default_factory=dict, description="Extra topic configuration for created topics.")
    dead_letter_topic: str = Field("cdc.dead-letters", description="Where references to unpublishable events go.")
    checkpoint_topic: str = Field("cdc.checkpoints", description="Compacted topic holding checkpoints.")
    checkpoint_replication_factor: int = Field(-1, ge=-1, description="Replication of the checkpoint topic.")

    @field_validator("mapping")
    @classmethod
    def _one_topic_per_collection(cls, mapping: dict[str, str]) -> dict[str, str]:
        check_topic_mapping(mapping)
        return mapping


class ProducerSettings(FrozenModel):
    """The Kafka producer (always idempotent, acks=all)."""

    value_format: ValueFormat = Field(ValueFormat.JSON, description="json (relaxed Extended JSON) or bson.")
    delivery: DeliveryMode = Field(DeliveryMode.AT_LEAST_ONCE, description="at_least_once or exactly_once.")
    transactional_id: str | None = Field(None, description="Transactional id (exactly_once); default cdc-<name>.")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field("lz4", description="compression.type.")
    linger_ms: int = Field(20, ge=0, description="linger.ms.")
    batch_size_bytes: int = Field(1_000_000, ge=1, description="batch.size.")
    delivery_timeout_ms: int = Field(120_000, ge=1000, description="How long librdkafka retries one message.")
    transaction_timeout_ms: int = Field(60_000, ge=1000, description="transaction.timeout.ms (exactly_once).")


class ClaimSettings(FrozenModel):
    """Where events too large for their topic are kept (claim checks; lakehouse_common.claims)."""

    enabled: bool = Field(
        True,
        description="Keep an event too large for its topic in the claim store and publish a reference to it, which "
        "bronze-writer resolves; false: dead-letter a reference only (the event never reaches bronze).",
    )
    root: str = Field(
        "build/lake",
        description="The lake root claims are written under (<root>/claims/): the bronze writer's lake.root "
        "(BRONZE_LAKE__ROOT), a local path or an object-store URI (s3://..., gs://..., az://...).",
    )
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Storage options of that root, as deltalake takes them (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP, ...); secret.",
    )

    @field_validator("root")
    @classmethod
    def _supported_store(cls, root: str) -> str:
        schemes = ("file", "s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure")
        if "://" in root and root.split("://", 1)[0].lower() not in schemes:
            raise ValueError(f"use a local path or one of {', '.join(scheme + '://' for scheme in schemes)}")
        return root

    def revealed_options(self) -> dict[str, str]:
        """The storage options with their secrets, for the object-store client only."""
        return {key: value.get_secret_value() for key, value in self.storage_options.items()}


class SnapshotSettings(FrozenModel):
    """Copies of existing documents: the initial one, and chunked ones while streaming (on signal)."""

    mode: SnapshotMode = Field(SnapshotMode.INITIAL, description="initial or never.")
    parallelism: int = Field(4, ge=1, description="Collections copied at once.")
    batch_size: int = Field(2000, ge=1, description="Documents per find batch.")
    progress_log_interval_s: float = Field(10.0, gt=0, description="Progress log period when not on a terminal.")
    signal_collection: str | None = Field(
        None,
        description="Signal collection (db.collection) for snapshots on signal while streaming; none: off. "
        "Needs insert/update/delete rights on it; it is never captured.",
    )
    chunk_size: int = Field(4096, ge=1, description="Documents per chunk of a copy on signal.")
    chunk_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of documents per chunk at most (a chunk holds one document at least)."
    )

    @field_validator("signal_collection")
    @classmethod
    def _a_plain_namespace(cls, namespace: str | None) -> str | None:
        if namespace is None:
            return None
        database, dot, collection = namespace.partition(".")
        if not dot or not database or not collection:
            raise ValueError(f"{namespace!r} is not a namespace: give <database>.<collection>")
        if database in ("admin", "local", "config") or collection.startswith("system."):
            raise ValueError(f"{namespace!r}: the signal collection cannot live in {database!r} or be a system collection")
        return namespace


class CdcSettings(ServiceSettings):
    """Configuration of cdc_service."""

    model_config = {**ServiceSettings.model_config, "env_prefix": "CDC_"}

    name: str = Field("cdc", description="Service name: checkpoint keys and the default transactional id use it.")
    mongo_uri: SecretStr = Field(..., description="MongoDB connection string (never logged).")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka cluster.")
    scope: ScopeSettings = Field(default_factory=ScopeSettings, description="What to capture.")
    stream: StreamSettings = Field(default_factory=StreamSettings, description="Change streams.")
    topics: TopicSettings = Field(default_factory=TopicSettings, description="Topics.")
    producer: ProducerSettings = Field(default_factory=ProducerSettings, description="Producer.")
    snapshot: SnapshotSettings = Field(default_factory=SnapshotSettings, description="Snapshots: initial and on signal.")
    claims: ClaimSettings = Field(default_factory=ClaimSettings, description="Claim store for oversized events.")
    on_history_lost: HistoryLostPolicy = Field(
        HistoryLostPolicy.FAIL, description="fail (stop with instructions) or resnapshot (copy affected collections again)."
    )
    checkpoint_interval_s: float = Field(1.0, gt=0, description="How often acknowledged positions are checkpointed.")
    heartbeat_interval_s: float = Field(10.0, gt=0, description="How often a quiet stream checkpoints its post-batch token.")
    max_batch_events: int = Field(20_000, ge=1, description="Events per transaction/checkpoint cycle at most.")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Bound on drain, flush and checkpoint at SIGTERM.")
    retry_initial_backoff_s: float = Field(0.5, gt=0, description="First pause after a transient failure.")
    retry_max_backoff_s: float = Field(
        10.0, gt=0,
        description="Longest pause between retries: after an outage, capture resumes at most this long after the "
        "dependency is back (at 30 s a broker restart cost up to half a minute of capture).",
    )
    retry_max_attempts: int = Field(0, ge=0, description="Consecutive failed restarts before giving up; 0 = never.")
    progress_bar: Literal["auto", "always", "never"] = Field("auto", description="Rich progress bar for snapshots.")

    @field_validator("name")
    @classmethod
    def _simple_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> CdcSettings:
        if self.topics.dead_letter_topic == self.topics.checkpoint_topic:
            raise ValueError("topics.dead_letter_topic and topics.checkpoint_topic must differ")
        return self

    @property
    def transactional_id(self) -> str:
        return self.producer.transactional_id or f"cdc-{self.name}"

    @property
    def exactly_once(self) -> bool:
        return self.producer.delivery is DeliveryMode.EXACTLY_ONCE


__all__ = [
    "CdcSettings",
    "ClaimSettings",
    "DeliveryMode",
    "FullDocumentMode",
    "HistoryLostPolicy",
    "PreImageMode",
    "ProducerSettings",
    "ScopeSettings",
    "SnapshotMode",
    "SnapshotSettings",
    "StreamLayout",
    "StreamSettings",
    "TopicSettings",
    "is_regex_pattern",
    "resume_token_problem",
]
