"""Signal documents: what the service executes, what it rejects with the reason, and watermark ids."""

from __future__ import annotations

import pytest

from cdc_service.signals import (
    Signal,
    SignalBox,
    SignalError,
    SignalStatus,
    SignalType,
    parse_signal,
    parse_watermark_id,
    value_of_text,
    value_text,
    watermark_id,
)


def test_an_execute_snapshot_signal_names_collections_and_an_optional_filter() -> None:
    signal = parse_signal({"_id": 7, "type": "execute-snapshot",
                           "data": {"data-collections": ["shop.orders", "shop.orders", "crm.leads"], "filter": {"open": True}}})
    assert signal == Signal(7, SignalType.EXECUTE_SNAPSHOT, ("shop.orders", "crm.leads"), {"open": True})
    assert value_of_text(signal.id_text) == 7
    stop = parse_signal({"_id": "s", "type": "stop-snapshot"})
    assert stop.type is SignalType.STOP_SNAPSHOT and stop.collections == ()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"type": "execute-snapshot"}, "no _id"),
        ({"_id": 1, "type": "log"}, "not a signal"),
        ({"_id": 1, "type": "execute-snapshot", "data": {"data-collections": []}}, "names no collection"),
        ({"_id": 1, "type": "execute-snapshot", "data": {"data-collections": ["orders"]}}, "not a namespace"),
        ({"_id": 1, "type": "execute-snapshot", "data": {"data-collections": "shop.orders"}}, "must be a list"),
        ({"_id": 1, "type": "execute-snapshot", "data": {"data-collections": ["shop.o"], "type": "blocking"}}, "not supported"),
        ({"_id": 1, "type": "execute-snapshot", "data": {"data-collections": ["shop.o"], "filter": "a > 1"}}, "query document"),
        ({"_id": 1, "type": "stop-snapshot", "data": {"filter": {"a": 1}}}, "takes no filter"),
        ({"_id": 1, "type": "execute-snapshot", "data": []}, "must be a document"),
    ],
)
def test_an_unusable_signal_is_refused_with_the_reason(document: dict, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        parse_signal(document)


def test_watermark_ids_name_their_window_and_mark() -> None:
    window = "a1b2c3d4e5f6:17:0badcafe"
    assert parse_watermark_id(watermark_id(window, "low")) == (window, "low")
    assert parse_watermark_id(watermark_id(window, "high")) == (window, "high")
    for other in ("snapshot-1", "wm:", "wm:x:middle", 5, None):
        assert parse_watermark_id(other) is None
    assert value_text({"$oid": 1}) != value_text("x")


def test_acceptance_is_a_compare_and_set_against_withdrawal(mongo_client, mongo_database) -> None:
    box = SignalBox(mongo_client, f"{mongo_database.name}.cdc_signals")
    first = box.send(["shop.orders"])
    assert box.accept(first, "svc") and box.accept(first, "svc")  # this service again, after a crash
    assert not box.accept(first, "other") and not box.withdraw(first)
    second = box.send(["shop.orders"], {"open": True})
    assert box.withdraw(second) and not box.accept(second, "svc")
    assert box.status(second)["status"] == SignalStatus.WITHDRAWN and box.status(second)["data"]["filter"] == {"open": True}
    box.finish(first, {"namespace": "shop.orders", "state": "done"}, done=True)
    assert box.status(first)["status"] == SignalStatus.DONE and box.status(first)["finished"][0]["state"] == "done"
