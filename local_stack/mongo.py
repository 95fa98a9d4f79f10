"""The MongoDB STAND-IN: mongo-java-server in memory, with its oplog on, on a free port.

It is not MongoDB. It stands in for a replica set where none can run (no mongod can be
installed here): collection-level change streams with resume tokens, start times and
update lookups work; pre-images, transactions in streams, database- and deployment-wide
streams, event splitting and history loss do not. ``local_stack/java/MongoStandIn.java``
documents what its launcher adds to bring events closer to MongoDB's documented shape.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse_common.errors import StackError
from local_stack.paths import component_jars, java_executable, standin_classes_dir
from local_stack.processes import stop_process, tail

logger = logging.getLogger(__name__)

STANDIN_DESCRIPTION = "MongoDB stand-in (mongo-java-server, in memory; not a real replica set)"


@dataclass
class MongoStandIn:
    """A running stand-in. Connect with ``uri`` (direct connection, no replica set name)."""

    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout=timeout)


def start_mongo_standin(log_dir: Path, *, port: int = 0, heap: str = "1g", timeout: float = 60.0) -> MongoStandIn:
    """Start the stand-in; ``port=0`` binds a free port. Raises ``StackError`` on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "mongo-standin.log"
    classpath = ":".join([str(standin_classes_dir()), *(str(jar) for jar in component_jars("mongo-standin"))])
    if not (standin_classes_dir() / "MongoStandIn.class").exists():
        raise StackError("the stand-in launcher is not compiled: run `make setup` first")
    stderr = open(log_file, "wb")  # noqa: SIM115 - the stand-in owns it
    process = subprocess.Popen(
        [java_executable(), "-Xms128m", f"-Xmx{heap}", "-cp", classpath, "MongoStandIn", str(port)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    lines: queue.Queue[bytes] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read_stdout, name="mongo-standin-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith(b"LISTENING "):
            standin = MongoStandIn(int(line.split()[1]), log_file, process)
            logger.info("%s listening on %s", STANDIN_DESCRIPTION, standin.uri)
            return standin
    stop_process(process, timeout=5)
    raise StackError(f"the MongoDB stand-in did not start; log {log_file}:\n{tail(log_file)}")


__all__ = ["STANDIN_DESCRIPTION", "MongoStandIn", "start_mongo_standin"]
