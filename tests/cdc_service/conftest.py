"""Fixtures for the cdc_service tests: service settings on the session broker and stand-in,
an in-process service runner, and the service as a subprocess (for SIGKILL tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cdc_support, shared by the tests of this package

from cdc_support import settings_env, settings_from  # noqa: E402

from cdc_service.service import CdcService  # noqa: E402
from cdc_service.settings import CdcSettings  # noqa: E402
from local_stack.paths import PROJECT_ROOT  # noqa: E402


@pytest.fixture
def cdc_env(mongo_endpoint: Any, kafka_broker: Any, mongo_database: Any) -> Callable[..., dict[str, str]]:
    """Build the environment of a service watching the test's database."""

    def build(**extra: str) -> dict[str, str]:
        return settings_env(mongo_endpoint.uri, kafka_broker.bootstrap_servers, mongo_database.name, **extra)

    return build


class RunningService:
    """A service running in a thread of the test process."""

    def __init__(self, settings: CdcSettings, **run_arguments: Any) -> None:
        self.settings = settings
        self.service = CdcService(settings)
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, kwargs=run_arguments, daemon=True)
        self._thread.start()

    def _run(self, **run_arguments: Any) -> None:
        self.exit_code = self.service.run(**run_arguments)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.service.readiness().ok:
            if self.exit_code is not None:
                raise AssertionError(f"service exited with {self.exit_code}")
            if time.monotonic() > deadline:
                raise AssertionError(f"service not ready: {self.service.readiness().detail}")
            time.sleep(0.05)

    def streaming(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` change streams run (snapshots done)."""
        deadline = time.monotonic() + timeout
        while self.service.metrics.streams._value.get() < count:  # noqa: SLF001 - test introspection
            if self.exit_code is not None:
                raise AssertionError(f"service exited with {self.exit_code}")
            if time.monotonic() > deadline:
                raise AssertionError("streams did not start")
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> int | None:
        self.service.request_stop()
        self._thread.join(timeout)
        return self.exit_code

    def join(self, timeout: float = 60.0) -> int | None:
        self._thread.join(timeout)
        return self.exit_code


@pytest.fixture
def run_service() -> Iterator[Callable[..., RunningService]]:
    """Start services in threads; every one still running is stopped afterwards."""
    started: list[RunningService] = []

    def start(env: dict[str, str], **run_arguments: Any) -> RunningService:
        service = RunningService(settings_from(env), **run_arguments)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``cdc-service`` subprocesses (logs in tmp_path); killed afterwards if still running."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *arguments: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"service-{len(processes)}.log", "wb")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [sys.executable, "-m", "cdc_service.cli", *(arguments or ("run",))],
            env={**os.environ, **env},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)
