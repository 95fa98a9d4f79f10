"""Pipeline attempts: each owns its queue, stop event and threads; ``run()`` acts on classify's action only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cdc_support import fixture_events, raw, settings_from

from cdc_service import pipeline
from cdc_service.change_stream import ReadBatch
from cdc_service.errors import HistoryLostError, PipelineModifiesResumeTokenError
from cdc_service.metrics import CdcMetrics
from cdc_service.pipeline import PipelineAttempt, ServiceState
from cdc_service.positions import Position
from cdc_service.scope import NamespaceFilter
from cdc_service.service import CdcService
from cdc_service.settings import CdcSettings
from lakehouse_common.errors import ConfigError, FatalError, TransientError
from lakehouse_common.lifecycle import ExitCode

pytestmark = pytest.mark.timeout(240)

EVENTS = fixture_events()


class _HangingReader:
    """A change stream whose getMore hangs until released (a server that stopped answering), then brings an event."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.position: Position | None = Position.from_token({"_data": "82AA01"})
        self.reads = 0
        self.closed = False

    def open(self) -> Position | None:
        return self.position

    def read(self) -> ReadBatch:
        self.reads += 1
        self.release.wait(120)
        return ReadBatch([raw(EVENTS["insert"])], Position.from_token({"_data": "82AA02"}))

    def close(self) -> None:
        self.closed = True


def _attempt(settings: CdcSettings, state: ServiceState, stop: threading.Event) -> PipelineAttempt:
    return PipelineAttempt(settings, CdcMetrics(), NamespaceFilter(settings.scope), state, stop)


def test_a_reader_outliving_its_attempt_never_reaches_the_next_attempt(cdc_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "READER_JOIN_TIMEOUT_S", 0.2)  # the getMore outlasts the join
    settings = settings_from(cdc_env())
    state, service_stop = ServiceState(), threading.Event()
    release = threading.Event()
    reader = _HangingReader(release)
    with _attempt(settings, state, service_stop) as first:
        thread = first.spawn_reader("coll:shop.customers", reader, fresh=False)
        deadline = time.monotonic() + 30
        while reader.reads == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert thread.is_alive() and first.readers_stop.is_set()  # the attempt ended; its reader still waits

    with _attempt(settings, state, service_stop) as second:
        assert second.queue is not first.queue and second.readers_stop is not first.readers_stop
        release.set()  # the old getMore returns, with an event
        thread.join(30)
        assert not thread.is_alive() and reader.closed
        assert second.queue.empty() and not second.readers_stop.is_set() and not service_stop.is_set()
        assert first.queue.empty()  # dropped: its attempt had ended; the next one reads it again from the checkpoint


def test_an_attempt_closes_what_it_opened_even_when_it_fails(cdc_env) -> None:
    settings = settings_from(cdc_env())
    attempt = _attempt(settings, ServiceState(), threading.Event())
    release = threading.Event()
    with pytest.raises(RuntimeError, match="boom"), attempt:
        attempt.spawn_reader("coll:shop.customers", _HangingReader(release), fresh=False)
        raise RuntimeError("boom")
    release.set()
    assert attempt.readers_stop.is_set()
    for thread in attempt.threads:
        thread.join(30)
        assert not thread.is_alive()


def test_a_snapshot_takes_its_position_before_listing_what_it_copies(
    cdc_env, run_service, mongo_database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed first, a collection created before the position is taken is neither copied nor streamed."""
    mongo_database["orders"].insert_one({"_id": 1})
    calls: list[str] = []
    take_position, list_collections = pipeline.current_position, pipeline.covered_collections

    def position(*args: Any, **kwargs: Any) -> Any:
        calls.append("position")
        return take_position(*args, **kwargs)

    def listing(*args: Any, **kwargs: Any) -> Any:
        calls.append("listing")
        return list_collections(*args, **kwargs)

    monkeypatch.setattr(pipeline, "current_position", position)
    monkeypatch.setattr(pipeline, "covered_collections", listing)
    service = run_service(cdc_env(), snapshot_only=True)
    assert service.join(120) == ExitCode.OK
    assert "position" in calls and "listing" in calls[calls.index("position") :]


class _ScriptedAttempt:
    """Stands in for a pipeline attempt: each one plays the next step of a script."""

    script: Iterator[Any]
    seen_forced: list[set[str] | None]

    def __init__(self, settings: CdcSettings, metrics: CdcMetrics, namespaces: Any, state: ServiceState, stop: Any) -> None:
        self.state = state

    def __enter__(self) -> _ScriptedAttempt:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(self) -> None:
        step = next(self.script)
        _ScriptedAttempt.seen_forced.append(set(self.state.force_snapshot or ()))
        if step == "copied":  # the new copy finished and the stream streams past it
            self.state.force_snapshot.discard("coll:shop.orders")  # type: ignore[union-attr]
            return
        if isinstance(step, BaseException):
            raise step


def _run_script(monkeypatch: pytest.MonkeyPatch, steps: list[Any], **settings: Any) -> tuple[int, list[set[str] | None]]:
    _ScriptedAttempt.script = iter(steps)
    _ScriptedAttempt.seen_forced = []
    monkeypatch.setattr("cdc_service.service.PipelineAttempt", _ScriptedAttempt)
    values = {"mongo_uri": "mongodb://unused", "retry_initial_backoff_seconds": 0.01, **settings}
    return CdcService(CdcSettings(**values)).run(), _ScriptedAttempt.seen_forced


def _lost(kind: str | None) -> HistoryLostError:
    return HistoryLostError(
        "stream coll:shop.orders cannot resume (code 286)", stream_id="coll:shop.orders", code=286, checkpoint_kind=kind
    )


def test_resnapshot_copies_a_stream_again_only_after_it_streamed_past_its_last_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    code, forced = _run_script(monkeypatch, [_lost("event"), "copied"], on_history_lost="resnapshot")
    assert code == ExitCode.OK and forced == [set(), {"coll:shop.orders"}]

    # Lost again straight after its copy (the copy outlasts the oplog window): stop, never loop.
    code, forced = _run_script(monkeypatch, [_lost("event"), _lost("snapshot"), "copied"], on_history_lost="resnapshot")
    assert code == ExitCode.HISTORY_LOST and len(forced) == 2
    code, _ = _run_script(monkeypatch, [_lost("heartbeat"), _lost("event")], on_history_lost="resnapshot")
    assert code == ExitCode.HISTORY_LOST  # still marked for a copy that never completed

    code, forced = _run_script(monkeypatch, [_lost("event")], on_history_lost="fail")
    assert code == ExitCode.HISTORY_LOST and forced == [set()]


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (PipelineModifiesResumeTokenError("stream.pipeline modified _id"), ExitCode.BAD_CONFIGURATION),
        (ConfigError("two namespaces on one topic"), ExitCode.BAD_CONFIGURATION),
        (FatalError("would lose data"), ExitCode.FAILED),
        (ValueError("a bug"), ExitCode.FAILED),
    ],
)
def test_run_stops_with_the_exit_code_of_the_action(
    monkeypatch: pytest.MonkeyPatch, error: Exception, exit_code: ExitCode
) -> None:
    code, forced = _run_script(monkeypatch, [error, "copied"], on_history_lost="resnapshot")
    assert code == exit_code and len(forced) == 1  # stopped at once: no retry, no copy


def test_transient_failures_are_retried_until_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    code, forced = _run_script(monkeypatch, [TransientError("away"), TransientError("away"), None])
    assert code == ExitCode.OK and len(forced) == 3
    code, forced = _run_script(monkeypatch, [TransientError("away")] * 5, retry_max_attempts=2)
    assert code == ExitCode.FAILED and len(forced) == 3
