"""How every console script ends and stops: one exit-code enumeration and one signal helper.

Exit codes (docs/runbook.md lists them for operators):

=====  ====================  ==========================================================
code   name                  meaning
=====  ====================  ==========================================================
0      OK                    finished, or stopped on request after draining
1      FAILED                a fatal error stopped the program; its log says why
2      BAD_CONFIGURATION     settings or arguments are invalid; nothing was started
3      HISTORY_LOST          a change stream's resume point is gone (re-snapshot needed)
4      DIFFERENCES_FOUND     a verification compared two sides and they differ
130    INTERRUPTED           a second Ctrl-C (or SIGTERM) stopped it at once, undrained
=====  ====================  ==========================================================

The signal handler only sets a stop event (as quix-streams' ``Application`` does): the
service loop notices it, drains and unwinds its resources in order. A second signal means
the operator will not wait: the process exits at once with ``INTERRUPTED``. Data stays
safe either way, because checkpoints only ever follow durable data.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitCode(IntEnum):
    """The exit status of every console script."""

    OK = 0
    FAILED = 1
    BAD_CONFIGURATION = 2
    HISTORY_LOST = 3
    DIFFERENCES_FOUND = 4
    INTERRUPTED = 130


def _exit_now() -> None:
    os._exit(ExitCode.INTERRUPTED)


@contextmanager
def stop_on_signals(
    stop: threading.Event | Callable[[], object],
    *,
    on_second: Callable[[], None] = _exit_now,
) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT ask to stop; a second one calls ``on_second`` (exit at once).

    ``stop`` is an event to set or a callable to call. The previous handlers come back when
    the block ends. Outside the main thread (tests running a service in a thread) signals
    cannot be handled there, so the block installs nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    request = stop.set if isinstance(stop, threading.Event) else stop
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            logger.info("stop requested: finishing what is in flight (signal again to stop at once)", extra={"signal": name})
            request()
        else:
            logger.warning("second stop signal: exiting at once", extra={"signal": name})
            on_second()

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["STOP_SIGNALS", "ExitCode", "stop_on_signals"]
