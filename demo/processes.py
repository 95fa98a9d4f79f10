"""The services as an operator runs them: console scripts in their own process groups.

Each child gets its own session, so a Ctrl-C in the terminal reaches only the demo, which
then stops the children in order (SIGTERM to the group, SIGKILL after a grace period).
Output goes to one log file per child under ``build/demo/logs``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def console_script(name: str) -> str:
    """The console script installed beside this Python (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class ManagedProcess:
    """One child process with its log file; ``stop`` ends its whole process group."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_file: Path, cwd: Path) -> None:
        self.name = name
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logger.info("started %s (pid %s), log %s", name, self.process.pid, log_file)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal to the child's process group (it and anything it started)."""
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL it; returns the exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
                self.signal(signal.SIGKILL)
                self.process.wait(10)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            self.signal(signal.SIGKILL)
        self._log.close()
        return self.process.returncode

    def tail(self, lines: int = 15) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


__all__ = ["ManagedProcess", "console_script"]
