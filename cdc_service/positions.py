"""Where a change stream stands: a resume token, or an operation time, as MongoDB takes them.

A position is what a checkpoint stores and what a stream opens from: ``resumeAfter`` for
an event's token, ``startAfter`` for an invalidate event's token (the only way past one),
``startAtOperationTime`` for a time (replay from a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp, json_util
from bson.raw_bson import RawBSONDocument

from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, parse_snapshot_event_id, to_relaxed_json


@dataclass(frozen=True)
class Position:
    """A resume token (relaxed Extended JSON text) or an operation time."""

    token: str | None = None
    start_after: bool = False
    operation_time: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if (self.token is None) == (self.operation_time is None):
            raise ValueError("a position is a resume token or an operation time, exactly one of them")

    @classmethod
    def from_token(cls, token: Mapping[str, Any] | RawBSONDocument, *, start_after: bool = False) -> Position:
        return cls(token=to_relaxed_json(token).decode(), start_after=start_after)

    @classmethod
    def from_token_text(cls, text: str, *, start_after: bool = False) -> Position:
        """A token given as relaxed Extended JSON (``{"_data": "..."}``), checked."""
        try:
            parsed = json_util.loads(text, json_options=EXTENDED_JSON_OPTIONS)
        except (ValueError, TypeError) as error:
            raise ValueError(f"resume token {text!r} is not Extended JSON: {error}") from None
        if not isinstance(parsed, dict) or "_data" not in parsed:
            raise ValueError(f"resume token {text!r} has no _data field")
        return cls.from_token(parsed, start_after=start_after)

    @classmethod
    def from_time(cls, moment: datetime | Timestamp | tuple[int, int]) -> Position:
        if isinstance(moment, datetime):
            if moment.tzinfo is None:
                raise ValueError("give the time with a UTC offset, e.g. 2024-05-01T12:00:00Z")
            return cls(operation_time=(int(moment.timestamp()), 0))
        if isinstance(moment, Timestamp):
            return cls(operation_time=(moment.time, moment.inc))
        return cls(operation_time=(int(moment[0]), int(moment[1])))

    @property
    def token_document(self) -> dict[str, Any] | None:
        if self.token is None:
            return None
        return json_util.loads(self.token, json_options=EXTENDED_JSON_OPTIONS)

    @property
    def event_id(self) -> str | None:
        """``_data`` of the token: comparable with event ids."""
        document = self.token_document
        if document is None:
            return None
        data = document.get("_data")
        return data if isinstance(data, str) else None

    def stream_options(self) -> dict[str, Any]:
        """The ``$changeStream`` options that open a stream at this position."""
        if self.token is not None:
            return {"startAfter" if self.start_after else "resumeAfter": self.token_document}
        assert self.operation_time is not None
        return {"startAtOperationTime": Timestamp(*self.operation_time)}

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "start_after": self.start_after, "operation_time": self.operation_time}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Position:
        time = data.get("operation_time")
        return cls(
            token=data.get("token"),
            start_after=bool(data.get("start_after")),
            operation_time=(int(time[0]), int(time[1])) if time else None,
        )

    def describe(self) -> str:
        if self.token is not None:
            return f"{'startAfter' if self.start_after else 'resumeAfter'} {self.token}"
        assert self.operation_time is not None
        seconds, increment = self.operation_time
        return f"startAtOperationTime {datetime.fromtimestamp(seconds, UTC).isoformat()} (increment {increment})"


def parse_time(text: str) -> datetime:
    """An ISO-8601 time with an offset; ``Z`` is accepted for UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time (e.g. 2024-05-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add Z or +00:00")
    return moment


def snapshot_position_of(event_id: str) -> str | None:
    """The stream position a snapshot record's event id was taken at, or None for a live event id."""
    parsed = parse_snapshot_event_id(event_id)
    return parsed.position if parsed is not None else None


def timestamp_text(value: tuple[int, int] | None) -> str:
    if value is None:
        return "-"
    return f"{datetime.fromtimestamp(value[0], UTC).isoformat()} (+{value[1]})"


__all__ = ["Position", "parse_time", "snapshot_position_of", "timestamp_text"]
