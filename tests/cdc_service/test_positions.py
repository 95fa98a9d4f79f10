"""Positions: tokens and times as MongoDB takes them, and as checkpoints store them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import Timestamp

from cdc_service.positions import Position, parse_time, snapshot_position_of


def test_token_positions_round_trip() -> None:
    position = Position.from_token_text('{"_data": "8265A1B2C3000000012B"}')
    assert position.event_id == "8265A1B2C3000000012B"
    assert position.stream_options() == {"resumeAfter": {"_data": "8265A1B2C3000000012B"}}
    assert Position.from_dict(position.to_dict()) == position
    after = Position.from_token({"_data": "AA"}, start_after=True)
    assert after.stream_options() == {"startAfter": {"_data": "AA"}}


def test_time_positions() -> None:
    position = Position.from_time(parse_time("2024-05-01T12:00:00Z"))
    assert position.operation_time == (int(datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()), 0)
    assert position.stream_options() == {"startAtOperationTime": Timestamp(position.operation_time[0], 0)}
    assert Position.from_dict(position.to_dict()) == position
    assert "2024-05-01T12:00:00+00:00" in position.describe()


@pytest.mark.parametrize("text", ["yesterday", "2024-05-01T12:00:00"])
def test_bad_times_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize("token", ["not json", '{"x": 1}', "[1]"])
def test_bad_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValueError):
        Position.from_token_text(token)


def test_snapshot_event_ids_name_their_position() -> None:
    assert snapshot_position_of("82AA01.000000000007") == "82AA01"
    assert snapshot_position_of("82AA01") is None
