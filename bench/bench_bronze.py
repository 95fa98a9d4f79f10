"""The landing path: Kafka to Delta bronze, beside the raw consume rate and Spark Structured Streaming.

One topic on a real broker (local_stack.kafka) holds ``BENCH_BRONZE_EVENTS`` change events
(default 1,000,000) of about 1 KB, published as cdc_service does (contract.encode_events,
relaxed Extended JSON, key = document key). Then, each reading the whole topic:

- ``raw_consume``: confluent-kafka alone, touching every value (the ceiling);
- ``bronze_writer``: ``bronze-writer run`` as a subprocess with its default limits, until every
  partition's offset is in the Delta log (peak RSS and CPU seconds of the process);
- ``spark``: Spark Structured Streaming (Kafka source, Delta sink, trigger availableNow) landing
  the raw records, with no JSON parsing at all (its cheapest possible bronze), if it runs here.

Rates count from partition assignment (or the query's start) to the last commit, so process
start-up is excluded for every contender. ``stages`` times the writer's own stages in-process
on a sample. Results: ``build/bench/bronze.json`` with ``ratio_to_raw_consume``.
``scaling`` is the sizing curve: ``BENCH_BRONZE_SCALING_EVENTS`` events (default 200,000; 0 skips
it) on a topic of 1, 2 and 4 partitions landed by one writer, and of 2 and 4 by two replicas in
one group, each beside the raw consume rate of its own topic.
Env: BENCH_BRONZE_EVENTS, BENCH_BRONZE_PARTITIONS (4), BENCH_BRONZE_SPARK (1; 0 skips Spark),
BENCH_BRONZE_SCALING_EVENTS.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import bson
from bson import Decimal128, ObjectId, Timestamp

from lakehouse_common.contract import ProducedHeaders, ValueFormat, encode_events, headers_for
from local_stack.paths import PROJECT_ROOT

TEMPLATE_ID = "ffffffffffffffff"
TEMPLATE_OID = "aaaaaaaaaaaaaaaaaaaaaaaa"
TEMPLATES = 4000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _log(message: str) -> None:
    print(f"[bench_bronze {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _templates(rng: random.Random) -> list[tuple[bytes, bytes, ProducedHeaders]]:
    """Distinct ~1 KB order events with placeholder ids, encoded once by the contract."""
    statuses = ["new", "paid", "shipped", "returned"]
    raw = []
    for index in range(TEMPLATES):
        document = {
            "_id": ObjectId(TEMPLATE_OID),
            "customer_id": f"C{rng.randrange(10**6):06d}",
            "email": f"buyer{rng.randrange(10**6)}@example.com",
            "status": rng.choice(statuses),
            "amount": round(rng.uniform(1, 5000), 2),
            "quantity": rng.randrange(1, 20),
            "price": Decimal128(f"{rng.randrange(100, 99999)}.{rng.randrange(100):02d}"),
            "vip": rng.random() < 0.1,
            "created_at": datetime.fromtimestamp(1_700_000_000 + rng.randrange(10**7), UTC),
            "tags": rng.sample(["promo", "gift", "b2b", "mobile", "web", "store"], 3),
            "shipping": {"street": f"{rng.randrange(999)} Main St", "city": rng.choice(["Lyon", "Austin", "Osaka"]),
                         "zip": f"{rng.randrange(99999):05d}", "country": rng.choice(["FR", "US", "JP"])},
            "items": [{"sku": f"SKU-{rng.randrange(10**5)}", "qty": rng.randrange(1, 5), "price": round(rng.uniform(1, 500), 2)}
                      for _ in range(3)],
            "notes": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randrange(250, 450))),
        }  # fmt: skip
        event = {
            "_id": {"_data": TEMPLATE_ID},
            "operationType": "insert" if index % 4 else "update",
            "clusterTime": Timestamp(1_700_000_000 + index, 1),
            "wallTime": datetime.fromtimestamp(1_700_000_000 + index, UTC),
            "fullDocument": document,
            "ns": {"db": "bench", "coll": "orders"},
            "documentKey": {"_id": document["_id"]},
        }
        raw.append(bson.encode(event))
    encoded = encode_events(raw, ValueFormat.JSON)
    return [(item.key or b"", item.value, headers_for(item, ValueFormat.JSON)) for item in encoded]


def _produce(bootstrap: str, topic: str, count: int) -> int:
    """Publish ``count`` events with unique, increasing ids; returns the value bytes."""
    from confluent_kafka import Producer

    templates = _templates(random.Random(7))
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000, "enable.idempotence": True,
         "queue.buffering.max.kbytes": 1_048_576}
    )  # fmt: skip
    total = 0
    template_id, template_oid = TEMPLATE_ID.encode(), TEMPLATE_OID.encode()
    started = time.monotonic()
    for sequence in range(count):
        key, value, headers = templates[sequence % TEMPLATES]
        event_id = b"%016x" % sequence
        oid = b"%024x" % (sequence + 1)
        value = value.replace(template_id, event_id).replace(template_oid, oid)
        record_headers: ProducedHeaders = [headers[0], headers[1], (headers[2][0], event_id), headers[3]]
        while True:
            try:
                producer.produce(topic, value=value, key=key.replace(template_oid, oid), headers=record_headers)
                break
            except BufferError:
                producer.poll(0.05)
        total += len(value)
        if sequence % 100_000 == 0 and sequence:
            producer.poll(0)
            _log(f"produced {sequence:,} events ({sequence / (time.monotonic() - started):,.0f}/s)")
    assert producer.flush(120) == 0
    return total


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        consumer.close()


def _raw_consume(bootstrap: str, topic: str, count: int) -> dict[str, float]:
    """The ceiling: confluent-kafka consuming the topic, reading every value and its position."""
    from confluent_kafka import Consumer, TopicPartition

    assigned: list[float] = []
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
         "enable.auto.commit": False, "queued.max.messages.kbytes": 65536}
    )  # fmt: skip

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned.append(time.monotonic())
        consumer.assign(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    seen = 0
    size = 0
    try:
        while seen < count:
            for message in consumer.consume(num_messages=5000, timeout=1.0):
                if message.error():
                    continue
                value = message.value()
                size += len(value) if value is not None else 0
                message.partition(), message.offset()
                seen += 1
        finished = time.monotonic()
    finally:
        consumer.close()
    seconds = finished - assigned[0]
    return {
        "events": seen,
        "seconds": round(seconds, 2),
        "events_per_s": round(seen / seconds),
        "mb_per_s": round(size / seconds / 1e6, 1),
    }


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _tree_usage(root: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB summed) of a process and its descendants, while they run."""
    cpu, peak = 0.0, 0.0
    for pid in _tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return cpu, peak


def _bronze_writer(
    bootstrap: str, topic: str, lake_root: Path, ends: dict[int, int], total_bytes: int, log: Path, replicas: int = 1
) -> dict[str, float]:
    """``bronze-writer run`` as ``replicas`` processes of one consumer group, until every partition is landed."""
    from deltalake import DeltaTable

    from lakehouse_common import lake

    group = f"bench-bronze-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRONZE_CONSUMER__TOPIC_PATTERN": f"^{topic}$",
        "BRONZE_CONSUMER__GROUP_ID": group,
        "BRONZE_LAKE__ROOT": str(lake_root),
        "BRONZE_HTTP__PORT": "0",
        "BRONZE_HTTP__HOST": "127.0.0.1",
    }
    _prefix, database, collection = topic.split(".", 2)  # cdc.<db>.<collection>
    uri = lake.bronze_table_uri(str(lake_root), database, collection)
    logs = [log.with_name(f"{log.stem}-{replica}{log.suffix}") if replicas > 1 else log for replica in range(replicas)]
    outputs = [open(path, "wb") for path in logs]  # noqa: SIM115 - closed below
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", "from bronze_writer.cli import app; app()", "run"],
            env={**env, "BRONZE_WRITER_ID": f"bench-{replica}"},
            stdout=output,
            stderr=output,
        )  # fmt: skip
        for replica, output in enumerate(outputs)
    ]
    try:
        while True:
            time.sleep(0.5)
            for process, path in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"bronze-writer exited with {process.returncode}; see {path}")
            try:
                table = DeltaTable(uri)
            except Exception:  # not created yet
                continue
            if all(table.transaction_version(lake.app_id(topic, p)) == end - 1 for p, end in ends.items() if end):
                break
        usage = [_tree_usage(process.pid) for process in processes]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)
        for output in outputs:
            output.close()
    assigned = None
    for path in logs:
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("message", "").startswith("partitions assigned"):
                at = datetime.fromisoformat(entry["ts"])
                assigned = at if assigned is None else min(assigned, at)
                break
    assert assigned is not None, f"no replica logged its assignment; see {logs}"
    import polars as pl

    log_table = pl.read_delta(lake.ingest_log_uri(str(lake_root)))
    ended = cast("datetime | None", log_table["committed_at"].max())
    if ended is None or assigned is None:
        raise RuntimeError(f"bronze-writer logged no assignment or committed nothing (see {log})")
    rows = int(log_table["rows"].sum())
    seconds = (ended - assigned).total_seconds()
    cpu = sum(cpu for cpu, _ in usage)
    return {
        "events": rows,
        "seconds": round(seconds, 2),
        "events_per_s": round(rows / seconds),
        "mb_per_s": round(total_bytes / seconds / 1e6, 1),
        "commits": log_table.height,
        "replicas": replicas,
        "peak_rss_mb": round(max(peak for _, peak in usage)),  # of one replica (each its own process)
        "cpu_seconds": round(cpu, 1),
        "events_per_cpu_second": round(rows / cpu),
    }


def _scaling(work: Path, count: int) -> list[dict[str, object]]:
    """The sizing curve: ``count`` events landed at 1, 2 and 4 partitions by 1 replica, and at 2 and 4 by 2."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from local_stack.kafka import start_kafka

    curve: list[dict[str, object]] = []
    broker = start_kafka(work / "kafka-scaling", heap="1g")
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        for partitions, replicas in ((1, 1), (2, 1), (4, 1), (2, 2), (4, 2)):
            topic = f"cdc.bench.scaling{partitions}x{replicas}"
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
            total_bytes = _produce(broker.bootstrap_servers, topic, count)
            ends = _end_offsets(broker.bootstrap_servers, topic, partitions)
            raw = _raw_consume(broker.bootstrap_servers, topic, count)
            lake_root = work / f"lake-scaling-{partitions}x{replicas}"
            writer = _bronze_writer(
                broker.bootstrap_servers, topic, lake_root, ends, total_bytes,
                work / f"bronze-writer-{partitions}x{replicas}.log", replicas,
            )  # fmt: skip
            shutil.rmtree(lake_root, ignore_errors=True)
            point: dict[str, object] = {
                "partitions": partitions,
                "replicas": replicas,
                "events": count,
                "events_per_s": writer["events_per_s"],
                "events_per_cpu_second": writer["events_per_cpu_second"],
                "raw_consume_events_per_s": raw["events_per_s"],
                "ratio_to_raw_consume": round(writer["events_per_s"] / raw["events_per_s"], 3),
                "peak_rss_mb_per_replica": writer["peak_rss_mb"],
                "load_average": round(os.getloadavg()[0], 1),
            }
            _log(f"scaling: {point}")
            curve.append(point)
    finally:
        broker.stop()
    return curve


_SPARK_CHILD = r"""
import json, sys, time
from pathlib import Path
from spark_jobs.session import SparkSettings, build_spark_session, delta_jars
from local_stack.paths import component_jars
bootstrap, topic, target, work = sys.argv[1:5]
settings = SparkSettings(master="local[2]", app_name="bench-spark-kafka", warehouse_dir=Path(work) / "warehouse",
                         metastore_dir=Path(work) / "metastore", driver_memory="3g", shuffle_partitions=2)
jars = [*delta_jars(settings), *component_jars("spark-kafka")]
settings = settings.model_copy(update={"extra_conf": {"spark.jars": ",".join(str(jar) for jar in jars)}})
spark = build_spark_session(settings)
spark.sparkContext.setLogLevel("ERROR")
source = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic)
          .option("startingOffsets", "earliest").load())
rows = source.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "topic", "partition", "offset",
                         "timestamp")
started = time.time()
query = (rows.writeStream.format("delta").option("checkpointLocation", str(Path(work) / "checkpoint"))
         .trigger(availableNow=True).start(target))
query.awaitTermination()
print(json.dumps({"started": started, "finished": time.time()}), flush=True)
sys.stdin.read()
"""


def _spark(bootstrap: str, topic: str, work: Path, count: int, total_bytes: int) -> dict[str, object]:
    from local_stack.paths import component_jars

    try:
        component_jars("spark-kafka")
    except Exception as error:  # the setup did not fetch the Kafka source
        return {"skipped": str(error)}
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "spark.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-c", _SPARK_CHILD, bootstrap, topic, str(work / "delta"), str(work)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=60)
            return {"skipped": f"Spark exited with {process.returncode}; see {work / 'spark.log'}"}
        times = json.loads(line)
        cpu, peak = _tree_usage(process.pid)
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=120)
        log.close()
    seconds = times["finished"] - times["started"]
    return {
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_s": round(count / seconds),
        "mb_per_s": round(total_bytes / seconds / 1e6, 1),
        "peak_rss_mb": round(peak),
        "cpu_seconds": round(cpu, 1),
        "events_per_cpu_second": round(count / cpu),
        "job": "raw key/value + Kafka position to Delta, no parsing (trigger availableNow)",
    }


def _stages(sample: int = 50_000) -> dict[str, float]:
    """µs per event of the writer's stages, in-process, on one batch of the same events."""
    import tempfile

    from confluent_kafka import Message

    from bronze_writer.decode import Records, decode_topic
    from bronze_writer.schema import resolve
    from bronze_writer.settings import LakeSettings
    from bronze_writer.tables import BronzeTable

    templates = _templates(random.Random(7))
    messages = []
    for sequence in range(sample):
        key, value, headers = templates[sequence % TEMPLATES]
        value = value.replace(TEMPLATE_ID.encode(), b"%016x" % sequence)
        messages.append(Message(topic="cdc.bench.orders", partition=0, offset=sequence, key=key, value=value,
                                headers=headers, timestamp=(1, 0)))  # fmt: skip
    started = time.perf_counter()
    records = Records.from_messages(messages)
    access = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decode_topic("cdc.bench.orders", records)
    decode = time.perf_counter() - started
    started = time.perf_counter()
    resolved = resolve(decoded.frame, decoded.field_names, {}, topic="cdc.bench.orders", database="bench",
                       collection="orders", ingested_at=datetime.now(UTC))  # fmt: skip
    typing = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as root:
        table = BronzeTable(LakeSettings(root=root), "bench", "orders")
        started = time.perf_counter()
        table.land(decoded, "bench")
        land = time.perf_counter() - started
    assert len(records) == resolved.data.num_rows
    per_event = 1e6 / sample
    return {
        "collect_records_us": round(access * per_event, 2),
        "decode_us": round(decode * per_event, 2),
        "type_us": round(typing * per_event, 2),
        "dedupe_type_write_commit_us": round(land * per_event, 2),
    }


def main(results_dir: Path) -> dict[str, object]:
    from confluent_kafka.admin import AdminClient, NewTopic

    from local_stack.kafka import start_kafka

    count = int(os.environ.get("BENCH_BRONZE_EVENTS", 1_000_000))
    partitions = int(os.environ.get("BENCH_BRONZE_PARTITIONS", 4))
    with_spark = os.environ.get("BENCH_BRONZE_SPARK", "1") != "0"
    work = results_dir / "bronze-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    _log("stages, in-process")
    stages = _stages()
    _log(f"starting a broker; {count:,} events over {partitions} partitions")
    broker = start_kafka(work / "kafka", heap="2g")
    try:
        topic = "cdc.bench.orders"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
        total_bytes = _produce(broker.bootstrap_servers, topic, count)
        ends = _end_offsets(broker.bootstrap_servers, topic, partitions)
        _log(f"produced {count:,} events, {total_bytes / 1e6:,.0f} MB")
        raw = _raw_consume(broker.bootstrap_servers, topic, count)
        _log(f"raw consume: {raw}")
        writer = _bronze_writer(broker.bootstrap_servers, topic, work / "lake", ends, total_bytes, work / "bronze-writer.log")
        _log(f"bronze_writer: {writer}")
        spark = (
            _spark(broker.bootstrap_servers, topic, work / "spark", count, total_bytes)
            if with_spark
            else {"skipped": "BENCH_BRONZE_SPARK=0"}
        )
        _log(f"spark: {spark}")
    finally:
        broker.stop()
    scaling_events = int(os.environ.get("BENCH_BRONZE_SCALING_EVENTS", 200_000))
    scaling = _scaling(work, scaling_events) if scaling_events else []
    result: dict[str, object] = {
        "events": count,
        "partitions": partitions,
        "avg_event_bytes": round(total_bytes / count),
        "total_mb": round(total_bytes / 1e6),
        "raw_consume": raw,
        "bronze_writer": writer,
        "spark_structured_streaming": spark,
        "ratio_to_raw_consume": round(writer["events_per_s"] / raw["events_per_s"], 3),
        "stages_us_per_event": stages,
        "peak_rss_mb": writer["peak_rss_mb"],
        "events_per_cpu_second": writer["events_per_cpu_second"],
        "scaling": scaling,
        "machine": f"{os.cpu_count()} cores",
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # others' work skews the figures
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if "events_per_cpu_second" in spark:
        result["per_core_vs_spark"] = round(writer["events_per_cpu_second"] / cast(float, spark["events_per_cpu_second"]), 2)
    (results_dir / "bronze.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(work / "lake", ignore_errors=True)
    shutil.rmtree(work / "spark", ignore_errors=True)
    return result


if __name__ == "__main__":
    from local_stack.paths import PROJECT_ROOT as _ROOT

    print(json.dumps(main(_ROOT / "build" / "bench"), indent=2))
