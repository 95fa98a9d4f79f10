"""``ChaosRun``: the local stack, one lane per delivery mode, the faults, then the proof.

Phases:

1. a Kafka broker (KRaft) and the MongoDB stand-in, shared by the lanes;
2. per lane (delivery mode): seed documents, then ``cdc-service run`` and ``bronze-writer
   run`` as child processes and the bronze watch; once the initial snapshot is in bronze,
   the workload;
3. the fault cycles: dwell, inject one fault (``chaos.faults``), and, unless the cycle is
   an early one, wait until bronze lands a write made after the fault: the recovery time;
4. the workload stops; the run waits until bronze holds every write (or stops growing),
   then stops the services with SIGTERM (each must exit 0);
5. per lane the proof: exactly once per write, bronze's replay against MongoDB, and after
   ``spark-jobs dbt`` (a silver build), silver against MongoDB;
6. a table on the terminal and ``result.json``.

The lanes run side by side through the same faults by default (``parallel``): a broker
fault hits every lane at once, as it hits every pipeline of a real cluster.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from chaos.bronze import BronzeWatch, dead_letter_count, read_events
from chaos.diagnose import diagnose, kafka_positions, summarize_verdicts
from chaos.faults import Victim, schedule
from chaos.pipeline import SERVICES, Incarnation, Lane, Services, service_environment
from chaos.report import render
from chaos.settings import ChaosSettings
from chaos.verify import check_delivery, expected_key, replay
from chaos.workload import Workload
from demo.processes import ManagedProcess, console_script
from lakehouse_common.lifecycle import ExitCode, stop_on_signals
from local_stack.kafka import KafkaBroker, start_kafka
from local_stack.mongo import MongoStandIn, start_mongo_standin
from local_stack.paths import PROJECT_ROOT
from spark_jobs.verify import compare, documents_side, silver_side

ASSIGNED_MESSAGE = "partitions assigned, positioned from the Delta log"
COMMIT_MESSAGE = "bronze commit"


class ChaosInterrupted(Exception):
    """Ctrl-C or SIGTERM: stop everything the run started."""


@dataclass
class Fault:
    """One cycle's fault and what the lanes did after it."""

    cycle: int
    victim: Victim
    injected_at: float
    ended_at: float = 0.0
    early: bool = False  # the next fault came without waiting for recovery
    seq_at_end: dict[str, int] = field(default_factory=dict)  # per lane
    recovery_seconds: dict[str, float | None] = field(default_factory=dict)  # per lane; None: not measured or no progress
    stalled: list[str] = field(default_factory=list)  # lanes that landed nothing new within the recovery timeout
    restarted: dict[str, list[Incarnation]] = field(default_factory=dict)  # per lane
    broker_restart_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "victim": self.victim.value,
            "injected_at": _iso(self.injected_at),
            "fault_seconds": round(self.ended_at - self.injected_at, 3),
            "early": self.early,
            "recovery_seconds": self.recovery_seconds,
            "stalled": self.stalled,
            "broker_restart_seconds": self.broker_restart_seconds,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _figures(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


class LaneRun:
    """One delivery mode's pipeline through the run: its workload, services and bronze watch."""

    def __init__(self, settings: ChaosSettings, lane: Lane, bootstrap: str, mongo_uri: str, rng: random.Random) -> None:
        self.settings = settings
        self.lane = lane
        self.name = lane.mode.value
        self.environment = service_environment(settings, lane, bootstrap, mongo_uri)
        self.bootstrap = bootstrap
        self.workload = Workload(mongo_uri, lane.database, settings.collections, settings.rate, rng)
        self.services = Services(lane, self.environment)
        self.watch = BronzeWatch(str(lane.lake_root.resolve()), lane.database, settings.collections)
        self.unexpected_exits: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}

    def start_services(self) -> None:
        """Seed documents, then both services (cdc-service snapshots the seed) and the bronze watch."""
        self.lane.logs_dir.mkdir(parents=True, exist_ok=True)
        self.workload.seed(self.settings.seed_documents)
        for service in SERVICES:
            self.services.start(service)
        self.watch.start()

    def snapshot_missing(self) -> int:
        return self.watch.snapshot_missing(self.workload.seed_ids)

    def restart_exited(self, cycle: int | None) -> list[str]:
        """Restart services that ended on their own, recording each exit as a finding."""
        notes = []
        for incarnation in self.services.exited():
            self.unexpected_exits.append(
                {
                    "service": incarnation.service,
                    "incarnation": incarnation.number,
                    "exit_code": incarnation.exit_code,
                    "cycle": cycle,
                    "log": str(incarnation.log_file),
                    "log_tail": incarnation.process.tail(20),
                }
            )
            notes.append(f"{incarnation.service} exited on its own with {incarnation.exit_code}")
            self.services.start(incarnation.service)
        return notes

    def close(self) -> None:
        self.workload.close()
        self.watch.stop()
        self.services.kill_all()


class ChaosRun:
    """One run of the harness. ``run()`` returns the exit status (``ExitCode``)."""

    def __init__(self, settings: ChaosSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.seed = settings.seed if settings.seed is not None else random.randrange(1_000_000)
        self.rng = random.Random(self.seed)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.stop_event = threading.Event()
        self.broker: KafkaBroker | None = None
        self.standin: MongoStandIn | None = None
        self.faults: list[Fault] = []
        self._log_file = settings.work_dir / "chaos.log"

    # ------------------------------------------------------------------ output

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s[/] {message}", highlight=False)
        with self._log_file.open("a") as log:
            log.write(f"{elapsed:7.1f}s {message}\n")

    # ------------------------------------------------------------------ entry point

    def run(self) -> int:
        with stop_on_signals(self.stop_event):
            try:
                result = self._run()
            except ChaosInterrupted:
                self.console.print("[yellow]interrupted: everything the run started is stopped[/]")
                return ExitCode.INTERRUPTED
            except Exception as error:  # the harness itself failed (the stack, the workload): say so, fail
                self.say(f"[red]the chaos run failed: {type(error).__name__}: {error}[/]")
                self.console.print_exception(max_frames=6)
                return ExitCode.FAILED
        return ExitCode.OK if result["ok"] else ExitCode.FAILED

    def _run(self) -> dict[str, Any]:
        s = self.settings
        if s.work_dir.exists():
            shutil.rmtree(s.work_dir)
        s.work_dir.mkdir(parents=True)
        load_before = os.getloadavg()
        self.say(
            f"chaos: {s.cycles} fault cycles per mode, modes {', '.join(m.value for m in s.modes)}, seed {self.seed}, "
            f"work directory {s.work_dir}"
        )
        with ExitStack() as stack:
            self._start_stack(stack)
            assert self.broker is not None and self.standin is not None
            lanes = [
                LaneRun(
                    s,
                    Lane(mode, s.work_dir / mode.value),
                    self.broker.bootstrap_servers,
                    self.standin.uri,
                    random.Random(f"{self.seed}-{mode.value}"),
                )
                for mode in s.modes
            ]
            for lane in lanes:
                stack.callback(lane.close)
            groups = [lanes] if s.parallel else [[lane] for lane in lanes]
            for group in groups:
                self._chaos(group)
            for lane in lanes:
                self._verify(lane)
            if s.silver:
                self._verify_silver(lanes)
        result = self._result(lanes, load_before)
        s.result_file.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
        render(self.console, result)
        self.say(f"result written to {s.result_file}")
        verdict = (
            "[green]clean: nothing lost, nothing duplicated, every state equal[/]"
            if result["ok"]
            else ("[red]FAILED: see the table above and result.json[/]")
        )
        self.say(verdict)
        return result

    # ------------------------------------------------------------------ phases

    def _start_stack(self, stack: ExitStack) -> None:
        s = self.settings
        self.say("starting Kafka (KRaft, single node) and the MongoDB stand-in (mongo-java-server, not a real MongoDB)...")
        self.broker = start_kafka(s.work_dir / "stack" / "kafka", heap=s.kafka_heap)
        stack.callback(self._stop_broker)
        self.standin = start_mongo_standin(s.work_dir / "stack" / "mongo-standin", heap=s.standin_heap)
        stack.callback(self.standin.stop)
        self.say(f"Kafka at {self.broker.bootstrap_servers}, the stand-in at {self.standin.uri}")

    def _stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop(keep_logs=True)  # resumes a paused broker first

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise ChaosInterrupted

    def _wait(self, seconds: float, lanes: list[LaneRun], cycle: int | None) -> None:
        """Sleep, watching for Ctrl-C and for services that die on their own."""
        deadline = time.monotonic() + seconds
        while True:
            self._check_stop()
            self._check_lanes(lanes, cycle)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop_event.wait(min(remaining, 0.5))

    def _check_lanes(self, lanes: list[LaneRun], cycle: int | None) -> None:
        for lane in lanes:
            for note in lane.restart_exited(cycle):
                self.say(f"[red]{lane.name}: {note}[/] (restarted; recorded as a finding)")
            if lane.workload.error is not None:
                raise RuntimeError(f"{lane.name}: the workload failed: {lane.workload.error}")

    def _chaos(self, lanes: list[LaneRun]) -> None:
        s = self.settings
        names = ", ".join(lane.name for lane in lanes)
        started = time.monotonic()
        for lane in lanes:
            lane.start_services()
        self.say(f"{names}: seeded {s.seed_documents} documents per collection; services started")
        self._await_snapshot(lanes)
        self.say(f"{names}: the initial snapshot is in bronze ({time.monotonic() - started:.1f}s); the workload starts")
        for lane in lanes:
            lane.workload.start()
        start = Fault(0, Victim.BOTH, time.time(), ended_at=time.time())
        start.seq_at_end = {lane.name: 0 for lane in lanes}
        self._await_recovery(start, lanes, what="first landing")
        self.say(f"{names}: bronze landing ({self._recovery_text(start)} after start)")
        for cycle, victim in enumerate(schedule(s.cycles, self.rng), start=1):
            self._wait(self.rng.uniform(s.dwell_min_seconds, s.dwell_max_seconds), lanes, cycle)
            fault = self._inject(cycle, victim, lanes)
            self.faults.append(fault)
            fault.early = self.rng.random() < s.early_fault_probability and cycle < s.cycles
            if fault.early:
                self.say(
                    f"cycle {cycle}/{s.cycles}: {victim.value} ({fault.ended_at - fault.injected_at:.1f}s); next fault early"
                )
                continue
            self._await_recovery(fault, lanes, what=f"cycle {cycle}")
            self.say(
                f"cycle {cycle}/{s.cycles}: {victim.value} ({fault.ended_at - fault.injected_at:.1f}s), "
                f"bronze landing again {self._recovery_text(fault)}"
            )
        self._settle(lanes)

    def _await_snapshot(self, lanes: list[LaneRun]) -> None:
        """Until every seed document has a snapshot record in bronze (no workload writes before that)."""
        deadline = time.monotonic() + self.settings.recovery_timeout_seconds + 60
        while any(lane.snapshot_missing() for lane in lanes):
            if time.monotonic() > deadline:
                missing = {lane.name: lane.snapshot_missing() for lane in lanes}
                raise RuntimeError(f"the initial snapshot did not land in bronze: seed documents missing {missing}")
            self._wait(0.5, lanes, None)

    def _recovery_text(self, fault: Fault) -> str:
        parts = []
        for name, seconds in fault.recovery_seconds.items():
            parts.append(f"{name} {'STALLED' if seconds is None else f'{seconds:.1f}s'}")
        return ", ".join(parts)

    def _inject(self, cycle: int, victim: Victim, lanes: list[LaneRun]) -> Fault:
        s = self.settings
        assert self.broker is not None
        fault = Fault(cycle, victim, time.time())
        down = self.rng.uniform(0, s.down_max_seconds)
        if victim is Victim.BROKER:
            self.broker.kill()
            self._wait(down, lanes, cycle)
            restarting = time.monotonic()
            self.broker.restart()
            fault.broker_restart_seconds = round(time.monotonic() - restarting, 2)
        elif victim is Victim.PAUSE:
            # Past the delivery timeout by a random margin: records queued early in the pause
            # time out while those queued in its last seconds may still be delivered.
            self.broker.pause()
            try:
                self._wait(s.delivery_timeout_ms / 1000 + self.rng.uniform(0.2, s.pause_margin_seconds), lanes, cycle)
            finally:
                self.broker.resume()
        else:
            for lane in lanes:
                for service in victim.services:
                    lane.services.kill(service)
            self._wait(down, lanes, cycle)
            for lane in lanes:
                fault.restarted[lane.name] = [lane.services.start(service) for service in victim.services]
        fault.ended_at = time.time()
        fault.seq_at_end = {lane.name: lane.workload.last_seq for lane in lanes}
        return fault

    def _await_recovery(self, fault: Fault, lanes: list[LaneRun], what: str) -> None:
        """Until each lane's bronze holds an insert made after the fault ended (its recovery time)."""
        deadline = time.monotonic() + self.settings.recovery_timeout_seconds
        pending = {lane.name: lane for lane in lanes}
        while pending:
            for name, lane in list(pending.items()):
                landed = lane.watch.first_insert_after(fault.seq_at_end[name])
                if landed is not None:
                    fault.recovery_seconds[name] = round(max(0.0, landed - fault.ended_at), 2)
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                for name in pending:
                    fault.recovery_seconds[name] = None
                    fault.stalled.append(name)
                self.say(
                    f"[red]{what}: {', '.join(pending)} landed nothing new within "
                    f"{self.settings.recovery_timeout_seconds:.0f}s[/] (recorded as a stall)"
                )
                return
            self._wait(0.5, lanes, fault.cycle or None)

    def _settle(self, lanes: list[LaneRun]) -> None:
        """Stop the workload, then wait until bronze holds every write or stops growing; stop the services."""
        s = self.settings
        for lane in lanes:
            lane.workload.stop()
        self._check_lanes(lanes, None)
        started = time.monotonic()
        expected = {lane.name: [expected_key(write) for write in lane.workload.writes] for lane in lanes}
        last_report = started
        while True:
            self._check_stop()
            self._check_lanes(lanes, None)
            missing = {lane.name: lane.watch.missing(expected[lane.name]) for lane in lanes}
            if not any(missing.values()):
                break
            quiet = min(time.monotonic() - lane.watch.last_growth for lane in lanes)
            if quiet > s.settle_quiet_seconds or time.monotonic() - started > s.settle_timeout_seconds:
                self.say(f"[red]bronze stopped growing with writes missing: {missing}[/] (verifying anyway)")
                break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                self.say(f"  waiting for bronze: writes not landed yet {missing}")
            self.stop_event.wait(1.0)
        self.say(
            f"{', '.join(lane.name for lane in lanes)}: bronze holds what it will hold "
            f"({time.monotonic() - started:.1f}s after the workload stopped); stopping the services"
        )
        for lane in lanes:
            for service in reversed(SERVICES):
                code = lane.services.stop(service, timeout=60)
                if code not in (0, None):
                    current = lane.services.current(service)
                    lane.unexpected_exits.append(
                        {
                            "service": service,
                            "incarnation": current.number,
                            "exit_code": code,
                            "cycle": None,
                            "stage": "SIGTERM at the end",
                            "log": str(current.log_file),
                            "log_tail": current.process.tail(20),
                        }
                    )
                    self.say(f"[red]{lane.name}: {service} exited {code} on SIGTERM[/]")
            lane.watch.stop()

    def _verify(self, lane: LaneRun) -> None:
        s = self.settings
        root = str(lane.lane.lake_root.resolve())
        events = {collection: read_events(root, lane.lane.database, collection) for collection in s.collections}
        delivery = check_delivery(lane.workload.writes, events)
        mongo = {collection: documents_side(lane.workload.documents(collection)) for collection in s.collections}
        bronze_state = {
            collection: compare(mongo[collection], replay(events[collection]), layer_name="bronze")
            for collection in s.collections
        }
        lane.result.update(
            {
                "delivery": delivery.as_dict(),
                "bronze_state": {collection: diff.as_dict() for collection, diff in bronze_state.items()},
                "mongo_documents": {collection: side.rows for collection, side in mongo.items()},
                "bronze_rows": {collection: len(rows) for collection, rows in events.items()},
                "dead_letters": dead_letter_count(root),
            }
        )
        lane.result["_mongo"] = mongo
        mismatches = sum(diff.mismatches for diff in bronze_state.values())
        self.say(
            f"{lane.name}: {delivery.writes:,} writes; lost {len(delivery.lost)}, duplicated {delivery.duplicated}, "
            f"unexpected {len(delivery.unexpected)}; bronze replay differs for {mismatches} documents"
        )
        if delivery.lost or delivery.duplicated or delivery.unexpected:
            topics = {lane.lane.topic(collection): collection for collection in s.collections}
            try:
                positions = kafka_positions(lane.bootstrap, topics)
                lane.result["diagnosis"] = diagnose(delivery, positions, events)
                lane.result["diagnosis"]["lost_verdicts"] = summarize_verdicts(lane.result["diagnosis"]["lost"])
                self.say(f"{lane.name}: lost writes by where they were last seen: {lane.result['diagnosis']['lost_verdicts']}")
            except Exception as error:  # the diagnosis is extra: never lose the verdict to it
                lane.result["diagnosis"] = {"error": f"{type(error).__name__}: {error}"}

    def _verify_silver(self, lanes: list[LaneRun]) -> None:
        """``spark-jobs dbt`` for every lane at once (their lakes and metastores are separate), then compare."""
        command = json.loads(lanes[0].environment["SPARK_JOBS_DBT__COMMANDS"])[0]
        self.say(f"{', '.join(lane.name for lane in lanes)}: building silver (spark-jobs dbt: {command})...")
        started = time.monotonic()
        processes = {
            lane.name: ManagedProcess(
                f"dbt-{lane.name}",
                [console_script("spark-jobs"), "dbt"],
                lane.services.environment,
                lane.lane.logs_dir / "dbt.log",
                PROJECT_ROOT,
            )
            for lane in lanes
        }
        finished: dict[str, float] = {}
        try:
            while len(finished) < len(processes):
                self._check_stop()
                for name, process in processes.items():
                    if name not in finished and process.poll() is not None:
                        finished[name] = time.monotonic() - started
                time.sleep(0.5)
        finally:
            codes = {name: process.stop() for name, process in processes.items()}
        for lane in lanes:
            lane.result["dbt_exit_code"] = codes[lane.name]
            lane.result["dbt_seconds"] = round(finished[lane.name], 1)
            root = str(lane.lane.lake_root.resolve())
            silver = {
                collection: compare(documents, silver_side(root, collection))
                for collection, documents in lane.result["_mongo"].items()
            }
            lane.result["silver_state"] = {collection: diff.as_dict() for collection, diff in silver.items()}
            mismatches = sum(diff.mismatches for diff in silver.values())
            colour = "green" if codes[lane.name] == 0 and mismatches == 0 else "red"
            self.say(
                f"[{colour}]{lane.name}: dbt exited {codes[lane.name]} after {lane.result['dbt_seconds']:.0f}s; "
                f"silver differs for {mismatches} documents[/]"
            )

    # ------------------------------------------------------------------ the result

    def _lane_result(self, lane: LaneRun) -> dict[str, Any]:
        faults = [fault for fault in self.faults if lane.name in fault.seq_at_end]
        kills = {victim.value: sum(1 for fault in faults if fault.victim is victim) for victim in Victim}
        recovery: dict[str, list[float]] = {victim.value: [] for victim in Victim}
        partitions_back: list[float] = []
        first_commit: list[float] = []
        for fault in faults:
            seconds = fault.recovery_seconds.get(lane.name)
            if seconds is not None:
                recovery[fault.victim.value].append(seconds)
            for incarnation in fault.restarted.get(lane.name, []):
                if incarnation.service != "bronze-writer":
                    continue
                assigned = incarnation.first_logged(ASSIGNED_MESSAGE)
                committed = incarnation.first_logged(COMMIT_MESSAGE)
                if assigned is not None:
                    partitions_back.append(assigned - incarnation.started_at)
                if committed is not None:
                    first_commit.append(committed - incarnation.started_at)
        delivery = lane.result.get("delivery", {})
        bronze_mismatches = sum(diff["mismatches"] for diff in lane.result.get("bronze_state", {}).values())
        silver_mismatches = (
            sum(diff["mismatches"] for diff in lane.result["silver_state"].values()) if "silver_state" in lane.result else None
        )
        stalls = sum(1 for fault in faults if lane.name in fault.stalled)
        ok = (
            delivery.get("lost", 1) == 0
            and delivery.get("duplicated", 1) == 0
            and delivery.get("unexpected", 1) == 0
            and bronze_mismatches == 0
            and (silver_mismatches in (0, None))
            and lane.result.get("dbt_exit_code", 0) == 0
            and not lane.unexpected_exits
        )
        return {
            "ok": ok,
            "cycles": len(faults),
            "kills": kills,
            "writes": delivery.get("writes", len(lane.workload.writes)),
            "seed_documents": lane.workload.seeded,
            "lost": delivery.get("lost"),
            "duplicated": delivery.get("duplicated"),
            "unexpected": delivery.get("unexpected"),
            "state_mismatches": bronze_mismatches + (silver_mismatches or 0),
            "state_mismatches_by_layer": {"bronze_replay": bronze_mismatches, "silver": silver_mismatches},
            "unexpected_exits": lane.unexpected_exits,
            "stalls": stalls,
            "recovery_seconds": {victim: _figures(values) for victim, values in recovery.items()},
            "writer_restart_seconds": {
                "partitions_assigned": _figures(partitions_back),
                "first_commit": _figures(first_commit),
            },
            "dbt_exit_code": lane.result.get("dbt_exit_code"),
            "dbt_seconds": lane.result.get("dbt_seconds"),
            "details": {key: value for key, value in lane.result.items() if not key.startswith("_")},
            "processes": lane.services.describe(),
            "logs": str(lane.lane.logs_dir),
        }

    def _result(self, lanes: list[LaneRun], load_before: tuple[float, float, float]) -> dict[str, Any]:
        s = self.settings
        modes = {lane.name: self._lane_result(lane) for lane in lanes}
        return {
            "ok": all(mode["ok"] for mode in modes.values()),
            "started_at": _iso(self.started_wall),
            "duration_seconds": round(time.monotonic() - self.started, 1),
            "seed": self.seed,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_before": [round(value, 2) for value in load_before],
                "load_average_after": [round(value, 2) for value in os.getloadavg()],
            },
            "settings": json.loads(s.model_dump_json(exclude={"work_dir"})),
            "modes": modes,
            "faults": [fault.as_dict() for fault in self.faults],
        }


__all__ = ["ChaosInterrupted", "ChaosRun", "Fault", "LaneRun"]
