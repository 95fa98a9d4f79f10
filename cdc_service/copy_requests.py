"""What the service does with a signal document: start copies, stop them, or refuse with the reason.

A copy request (``execute-snapshot``) is taken whole or refused whole: every collection it
names must be in the scope, covered by a running stream, not being copied already, and its
filter must be a query MongoDB accepts. The answer goes back into the signal document
(``SignalBox``); a refused or odd signal never stops the service. A signal this service
executed already (a copy of its own came from it, per the checkpoints) is not executed again
when the signal collection's stream re-reads it after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cdc_service.actions import copy_refused
from cdc_service.incremental import IncrementalCopies
from cdc_service.metrics import CdcMetrics
from cdc_service.signals import Signal, SignalBox, SignalError, SignalType, parse_signal, value_text

logger = logging.getLogger(__name__)


class CopyRequests:
    """Signals in, copies out, answers back into the signal collection."""

    def __init__(
        self,
        service: str,
        client: MongoClient,
        box: SignalBox,
        copies: IncrementalCopies,
        metrics: CdcMetrics,
        *,
        in_scope: Callable[[str], bool],
        covering_stream: Callable[[str], str | None],
        discovery_interval_s: float,
    ) -> None:
        self.service = service
        self.client = client
        self.box = box
        self.copies = copies
        self.metrics = metrics
        self.in_scope = in_scope
        self.covering_stream = covering_stream
        self.discovery_interval_s = discovery_interval_s
        self._read_pending: set[str] = set()

    def handle(self, document: dict[str, Any], *, pending: bool = False) -> None:
        """One signal document: inserted in the signal collection (its change event), or
        ``pending`` (read from the collection when the signal stream opened; an insert made
        while it opened comes both ways, and runs once)."""
        identity = value_text(document.get("_id"))
        if pending:
            self._read_pending.add(identity)
        elif identity in self._read_pending:
            self._read_pending.discard(identity)
            return
        try:
            signal = parse_signal(document)
        except SignalError as error:
            self.reject(document.get("_id"), str(document.get("type")), str(error))
            return
        if signal.type is SignalType.EXECUTE_SNAPSHOT:
            self.execute_snapshot(signal)
        else:
            self.stop_snapshot(signal)

    def reject(self, signal_id: Any, kind: str, reason: str) -> None:
        label = kind if kind in {t.value for t in SignalType} else "unknown"
        self.metrics.signals.labels(label, "rejected").inc()
        logger.warning("signal rejected", extra={"signal": value_text(signal_id), "type": kind, "reason": reason})
        if signal_id is not None:
            self.box.reject(signal_id, self.service, reason)

    def execute_snapshot(self, signal: Signal) -> None:
        """Accept a copy request, every collection of it, or reject it whole."""
        if self.copies.handled(signal.id_text):
            logger.info("signal executed already", extra={"signal": signal.id_text})
            return
        problems: list[str] = []
        targets: list[tuple[str, str]] = []
        for namespace in signal.collections:
            stream_id = self.covering_stream(namespace)
            running = self.copies.progress(namespace)
            if not self.in_scope(namespace):
                problems.append(f"{namespace} is not captured by this service (outside its scope)")
            elif stream_id is None:
                problems.append(f"{namespace}: no change stream covers it yet (does it exist? discovery runs every "
                                f"{self.discovery_interval_s:g}s)")
            elif running is not None and running.running:
                problems.append(f"{namespace}: copy {running.copy_id} is running (chunk {running.chunks + 1}); "
                                "stop it first with a stop-snapshot signal")
            elif signal.filter is not None and (refusal := self.filter_refused(namespace, signal.filter)):
                problems.append(f"{namespace}: {refusal}")
            else:
                targets.append((namespace, stream_id))
        if problems:
            self.reject(signal.id, signal.type.value, "; ".join(problems))
            return
        if not self.box.accept(signal.id, self.service):
            self.metrics.signals.labels(signal.type.value, "ignored").inc()
            logger.info("signal not executed: withdrawn, answered already or taken by another service",
                        extra={"signal": signal.id_text})
            return
        query = value_text(signal.filter) if signal.filter is not None else None
        for namespace, stream_id in targets:
            self.copies.begin(namespace, stream_id, reason="signal", query=query, signal_id=signal.id_text)
        self.metrics.signals.labels(signal.type.value, "accepted").inc()
        logger.info("snapshot signal accepted: copying in chunks while streaming",
                    extra={"signal": signal.id_text, "collections": list(signal.collections), "filter": query})

    def filter_refused(self, namespace: str, query: dict[str, Any]) -> str | None:
        """Why MongoDB refuses the filter, asked on an empty range of the _id index; None if it takes it."""
        database, collection = namespace.split(".", 1)
        try:
            self.client[database][collection].find_one({"$and": [query, {"_id": {"$type": "minKey"}}]})
        except PyMongoError as error:
            reason = copy_refused(error)
            if reason is None:
                raise
            return reason
        return None

    def stop_snapshot(self, signal: Signal) -> None:
        stopped = self.copies.cancel(signal.collections or None, f"stopped by signal {signal.id_text}")
        if self.box.accept(signal.id, self.service):
            self.box.finish(signal.id, {"stopped": stopped}, done=True)
        self.metrics.signals.labels(signal.type.value, "accepted").inc()
        logger.info("stop-snapshot signal: copies stopped", extra={"signal": signal.id_text, "stopped": stopped})


__all__ = ["CopyRequests"]
