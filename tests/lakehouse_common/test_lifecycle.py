"""The exit-code enumeration and the stop-signal helper."""

from __future__ import annotations

import os
import signal
import threading

from lakehouse_common.lifecycle import ExitCode, stop_on_signals


def test_exit_codes_are_distinct_and_stable() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 130]
    assert len({int(code) for code in ExitCode}) == len(ExitCode)


def test_first_signal_sets_the_stop_event_and_the_second_calls_the_escape() -> None:
    stop = threading.Event()
    escapes: list[bool] = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop, on_second=lambda: escapes.append(True)):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert escapes == []
        os.kill(os.getpid(), signal.SIGINT)
        assert escapes == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_callable_stop_and_handlers_restored_after_an_error() -> None:
    calls: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    try:
        with stop_on_signals(lambda: calls.append("stop")):
            os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert calls == ["stop"]
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]
