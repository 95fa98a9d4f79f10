"""Replay: move streams back to a resume token, an operation time, or what a bronze table landed.

Replayed events keep their original ids, so the bronze writer drops the ones it already
holds (the exact ids: docs/event-contract.md, Ordering): a replay creates no duplicate rows
downstream.
A bronze table whose earliest mark is a snapshot record (the copy had not fully landed),
or that has no marks at all, cannot be resumed from a token: its stream is snapshotted
again, at a new position whose ids sort above everything landed before. One whose earliest
mark is a snapshot-complete marker (the copy landed whole, nothing after it yet) resumes from
the marker's cluster time: its id is no resume token, and its position may be a token of
another stream (a copy while streaming takes the signal stream's watermark); events at that
time are read again and bronze drops the ones it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl
from confluent_kafka import Producer

from cdc_service.checkpoints import CheckpointKind, StreamCheckpoint, snapshot_key, stream_key
from cdc_service.positions import Position, snapshot_position_of
from cdc_service.publisher import producer_config
from cdc_service.scope import StreamSpec
from cdc_service.settings import CdcSettings
from lakehouse_common.contract import Operation, absence_position
from lakehouse_common.errors import ConfigError, TransientError
from lakehouse_common.lake import HighWaterMark, bronze_table_uri, read_high_water_marks

logger = logging.getLogger(__name__)


@dataclass
class ReplayPlan:
    """New positions per stream, and the streams that must be snapshotted again."""

    positions: dict[str, Position] = field(default_factory=dict)
    resnapshot: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def select_streams(specs: Sequence[StreamSpec], wanted: Sequence[str]) -> list[StreamSpec]:
    """The streams named (all when none are), or a ``ConfigError`` listing the known ones."""
    if not wanted:
        return list(specs)
    known = {spec.stream_id: spec for spec in specs}
    missing = [stream for stream in wanted if stream not in known]
    for stream in missing:
        known[stream] = StreamSpec.parse(stream)
    return [known[stream] for stream in wanted]


def plan_from_token(specs: Sequence[StreamSpec], token: str, wanted: Sequence[str]) -> ReplayPlan:
    selected = select_streams(specs, wanted)
    if len(selected) != 1:
        raise ConfigError(
            "a resume token belongs to one stream: name it with --stream (streams: "
            + ", ".join(spec.stream_id for spec in specs)
            + ")"
        )
    position = Position.from_token_text(token)
    return ReplayPlan(positions={selected[0].stream_id: position})


def plan_from_time(specs: Sequence[StreamSpec], position: Position, wanted: Sequence[str]) -> ReplayPlan:
    return ReplayPlan(positions={spec.stream_id: position for spec in select_streams(specs, wanted)})


def plan_from_bronze(
    specs: Sequence[StreamSpec],
    covered: Mapping[str, Sequence[str]],
    lake_root: str,
    wanted: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
) -> ReplayPlan:
    """Each stream resumes from the earliest mark of the bronze tables of its collections."""
    plan = ReplayPlan()
    for spec in select_streams(specs, wanted):
        marks: dict[str, HighWaterMark] = {}
        tables: dict[str, str] = {}  # partition key -> the bronze table its mark is from
        for namespace in covered.get(spec.stream_id, ()):
            database, collection = namespace.split(".", 1)
            table = bronze_table_uri(lake_root, database, collection)  # escaped as in the topic's name
            table_marks = read_high_water_marks(table, storage_options)
            if not table_marks:
                plan.notes.append(f"{namespace}: no bronze marks in {table}")
            marks.update(table_marks)
            tables.update(dict.fromkeys(table_marks, table))
        if not marks:
            plan.resnapshot.append(spec.stream_id)
            plan.notes.append(f"{spec.stream_id}: nothing landed in bronze; it is snapshotted again")
            continue
        earliest = min(marks.values(), key=lambda mark: mark.event_id)
        if snapshot_position_of(earliest.event_id) is not None:
            plan.resnapshot.append(spec.stream_id)
            plan.notes.append(
                f"{spec.stream_id}: bronze holds only part of a snapshot ({earliest.event_id}); it is snapshotted again"
            )
            continue
        marker_time = _marker_cluster_time(tables[earliest.partition_key], earliest.event_id, storage_options)
        if marker_time is not None:
            plan.positions[spec.stream_id] = Position.from_time(marker_time)
            plan.notes.append(
                f"{spec.stream_id}: resumes at the cluster time of snapshot-complete marker {earliest.event_id} "
                f"({earliest.topic}[{earliest.partition}])"
            )
            continue
        plan.positions[spec.stream_id] = Position.from_token_text(earliest.resume_token)
        plan.notes.append(f"{spec.stream_id}: resumes after {earliest.event_id} ({earliest.topic}[{earliest.partition}])")
    return plan


def _marker_cluster_time(table: str, event_id: str, storage_options: Mapping[str, str] | None) -> tuple[int, int] | None:
    """The cluster time of the snapshot-complete marker ``event_id`` in ``table``; None when it is no marker."""
    if absence_position(event_id, Operation.SNAPSHOT_COMPLETE) is None:  # the contract's rule for a marker's id
        return None
    # polars, not a pyarrow dataset filter: bronze_writer's files hold string_view columns,
    # which pyarrow's comparison kernels refuse against a string literal.
    rows = (
        pl.scan_delta(table, storage_options=dict(storage_options or {}))
        .filter((pl.col("__event_id") == event_id) & (pl.col("__operation") == Operation.SNAPSHOT_COMPLETE.value))
        .select("__cluster_time", "__cluster_time_increment")
        .head(1)
        .collect()
        .to_dicts()
    )
    if not rows:
        return None
    return int(rows[0]["__cluster_time"].timestamp()), int(rows[0]["__cluster_time_increment"])


def write_plan(settings: CdcSettings, plan: ReplayPlan, kind: CheckpointKind = CheckpointKind.REPLAY) -> None:
    """Record the plan in the checkpoint topic; resnapshot streams lose their checkpoints."""
    records: dict[bytes, bytes | None] = {}
    for stream_id, position in plan.positions.items():
        checkpoint = StreamCheckpoint(stream_id, position, kind, event_id=position.event_id)
        records[stream_key(settings.name, stream_id)] = checkpoint.to_json()
    for stream_id in plan.resnapshot:
        records[stream_key(settings.name, stream_id)] = None
        records[snapshot_key(settings.name, stream_id)] = None
    write_records(settings, records)


def write_records(settings: CdcSettings, records: Mapping[bytes, bytes | None]) -> None:
    """Write checkpoint records durably. Exactly-once: in a transaction under the service's
    transactional id, which fences a running instance (stop it first)."""
    config = producer_config(settings)
    if settings.exactly_once:
        config["transactional.id"] = settings.transactional_id
    producer = Producer(config)
    failures: list[str] = []

    def on_delivery(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    topic = settings.topics.checkpoint_topic
    if settings.exactly_once:
        producer.init_transactions(60)
        producer.begin_transaction()
    for key, value in records.items():
        producer.produce(topic, value, key, on_delivery=on_delivery)
    if settings.exactly_once:
        producer.commit_transaction(60)
    remaining = producer.flush(60)
    if failures or remaining:
        raise TransientError(f"writing checkpoints failed: {failures or f'{remaining} unacknowledged'}")


__all__ = ["ReplayPlan", "plan_from_bronze", "plan_from_time", "plan_from_token", "select_streams", "write_plan", "write_records"]
