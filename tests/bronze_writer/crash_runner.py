"""Run bronze-writer (configured by BRONZE_* variables) and SIGKILL it at a chosen point.

Used by test_crash.py as a subprocess: ``python crash_runner.py MODE SEED``. Modes:

- ``before-write``: just before the k-th bronze table write starts;
- ``mid-write``: a timer fires while the k-th bronze write runs (files written, commit pending or done);
- ``after-bronze-commit``: right after the k-th bronze commit, before the ingest log and Kafka commit;
- ``before-kafka-commit``: after a whole batch is landed, before Kafka's offsets are committed;
- ``random``: at a random moment;
- ``none``: no kill (SIGTERM stops it gracefully).

The hooks wrap functions from outside; the service code has no test switches.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading

import bronze_writer.lander as lander_module
import bronze_writer.tables as tables_module
from bronze_writer.app import BronzeWriter
from bronze_writer.settings import BronzeSettings
from lakehouse_common.json_logging import configure_logging
from lakehouse_common.settings import load_settings

READY = "crash-runner ready"
CRASH_POINT = "crash-runner: kill point reached"


def die() -> None:
    print(CRASH_POINT, flush=True)  # the test checks that the hook fired, not a timeout's kill
    os.kill(os.getpid(), signal.SIGKILL)


def install(mode: str, rng: random.Random) -> None:
    countdown = [rng.randint(1, 3)]
    real_commit = tables_module.BronzeTable._commit

    # Every bronze write goes through BronzeTable._commit, whichever writer it takes (deltalake's
    # for a schema merge, pyarrow files plus a write transaction otherwise); the dead-letter and
    # ingest-log tables do not.
    def commit(self: tables_module.BronzeTable, *args: object, **kwargs: object) -> int:
        countdown[0] -= 1
        if countdown[0] != 0:
            return real_commit(self, *args, **kwargs)  # type: ignore[arg-type]
        if mode == "before-write":
            die()
        if mode == "mid-write":
            threading.Timer(rng.uniform(0.0, 0.02), die).start()
            result = real_commit(self, *args, **kwargs)  # type: ignore[arg-type]
            threading.Event().wait(0.05)
            die()
            return result
        result = real_commit(self, *args, **kwargs)  # type: ignore[arg-type]
        if mode == "after-bronze-commit":
            die()
        return result

    if mode in ("before-write", "mid-write", "after-bronze-commit"):
        tables_module.BronzeTable._commit = commit  # type: ignore[method-assign]
    elif mode == "before-kafka-commit":
        real_land = lander_module.Lander.land

        def land(self: lander_module.Lander, *args: object, **kwargs: object) -> object:
            result = real_land(self, *args, **kwargs)
            countdown[0] -= 1
            if countdown[0] == 0:
                die()
            return result

        lander_module.Lander.land = land  # type: ignore[method-assign]
    elif mode == "random":
        threading.Timer(rng.uniform(0.5, 4.0), die).start()


def main() -> None:
    mode, seed = sys.argv[1], int(sys.argv[2])
    settings = load_settings(BronzeSettings)
    configure_logging("bronze-writer", settings.log_level)
    install(mode, random.Random(seed))
    writer = BronzeWriter(settings)
    # A SIGTERM that arrives before run() installs its own handler must still stop gracefully;
    # READY tells the test that from here on it does.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: writer.stop())
    print(READY, flush=True)
    writer.run()


if __name__ == "__main__":
    main()
