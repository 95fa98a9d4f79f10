"""The CDC publish path: a recorded change stream replayed through serialization into a real broker.

For each value format, the service's own publishing code (``EventPublisher``: one native
encode per batch, contract headers, routing, oversize checks, checkpoints after each
acknowledged flush) is timed beside the raw confluent-kafka producer sending the same
records (keys, values and the contract headers, prepared in advance) with the same
configuration (idempotent, acks=all, lz4) in the ordinary call form,
``produce(topic, value, key, headers=headers)``: the baseline of the ratios. Two more raw
runs are references: the same records produced with positional arguments only (the form the
service uses: confluent-kafka then parses no keywords, which saves about a third of the
call), and the records without headers.

Size: ``CDC_BENCH_EVENTS`` (default 1,000,000 events of about 1 KB); each side runs
``CDC_BENCH_REPEATS`` times (default 2), round-robin with the others, and keeps its best. Results go to
``build/bench/cdc.json`` and the table in docs/cdc_service.md.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from confluent_kafka import Producer

from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.publisher import EncodedBatch, EventPublisher, encode_batch, producer_config
from cdc_service.settings import CdcSettings
from lakehouse_common.contract import ProducedHeaders, ValueFormat, encode_events, headers_for
from local_stack.kafka import start_kafka
from local_stack.paths import PROJECT_ROOT

DEFAULT_EVENTS = 1_000_000
RECORDED_EVENTS = 100_000  # distinct events recorded; the replay cycles through them
BATCH = 1000  # events per getMore batch, as the reader hands them on
TARGET_RATIO = 0.8  # issue 13: each format at least this share of the raw producer, in the same run
DOC_PATH = PROJECT_ROOT / "docs" / "cdc_service.md"
TABLE_START = "<!-- bench:cdc:start -->"
TABLE_END = "<!-- bench:cdc:end -->"


def record_change_stream(count: int, seed: int = 7) -> list[list[RawBSONDocument]]:
    """Change events as a replica set reports them (inserts, updateLookup updates, deletes), ~1 KB each."""
    rng = random.Random(seed)
    batches: list[list[RawBSONDocument]] = []
    batch: list[RawBSONDocument] = []
    base = 1_700_000_000
    for number in range(count):
        document_id = bson.ObjectId()
        roll = rng.random()
        operation = "insert" if roll < 0.6 else "update" if roll < 0.95 else "delete"
        document = {
            "_id": document_id,
            "customer": {"name": f"Customer {number}", "email": f"c{number}@example.com", "tier": rng.choice("ABC")},
            "items": [
                {"sku": f"SKU-{rng.randint(1, 9999)}", "qty": rng.randint(1, 5), "price": round(rng.random() * 100, 2)}
                for _ in range(6)
            ],
            "total": bson.Decimal128(f"{rng.random() * 1000:.2f}"),
            "created": datetime.fromtimestamp(base + number, UTC),
            "notes": "".join(rng.choices("abcdefghij ", k=300)),
            "status": rng.choice(["placed", "paid", "shipped"]),
        }
        event: dict[str, Any] = {
            "_id": {"_data": f"82{base + number // 100:08X}{number % 100:08X}2B022C0100296E5A1004"},
            "operationType": operation,
            "clusterTime": bson.Timestamp(base + number // 100, number % 100 + 1),
            "wallTime": datetime.fromtimestamp(base + number // 100, UTC),
            "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": document_id},
        }
        if operation != "delete":
            event["fullDocument"] = document
        if operation == "update":
            event["updateDescription"] = {
                "updatedFields": {"status": document["status"]},
                "removedFields": [],
                "truncatedArrays": [],
            }
        batch.append(RawBSONDocument(bson.encode(event), RAW_CODEC_OPTIONS))
        if len(batch) == BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def _progress(label: str, done: int, total: int, started: float) -> None:
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed else 0.0
    print(f"  {label}: {done:,}/{total:,} events ({100 * done / total:.0f}%), {rate:,.0f}/s", file=sys.stderr, flush=True)


def run_service_path(settings: CdcSettings, recorded: list[list[RawBSONDocument]], total: int) -> float:
    """Events per second through the service's path: a reader thread serializes each batch
    (``encode_batch``, as the stream readers do) and the publishing loop produces it and
    checkpoints every second after an acknowledged flush."""
    publisher = EventPublisher(settings)
    publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    publisher.route("shop", "orders")  # the topic exists before the clock starts, as in a running service
    publisher.producer.flush(30)
    batches: queue.Queue[EncodedBatch | None] = queue.Queue(maxsize=16)

    def read() -> None:
        sent = 0
        index = 0
        while sent < total:
            batch = recorded[index % len(recorded)]
            index += 1
            if sent + len(batch) > total:
                batch = batch[: total - sent]
            batches.put(encode_batch(batch, settings.producer.value_format))
            sent += len(batch)
        batches.put(None)

    started = time.monotonic()
    reader = threading.Thread(target=read, name="replayed-stream", daemon=True)
    reader.start()
    last_commit = last_report = started
    published = 0
    while (encoded := batches.get()) is not None:
        result = publisher.publish(encoded)
        published += result.produced
        now = time.monotonic()
        if now - last_commit >= settings.checkpoint_interval_seconds:
            publisher.commit(
                {b"bench/stream/x": json.dumps({"event_id": result.last_event_id}).encode()}, settings.topics.checkpoint_topic, 60
            )
            last_commit = now
        if now - last_report >= 5:
            _progress("service", published, total, started)
            last_report = now
    publisher.commit({b"bench/stream/x": b"{}"}, settings.topics.checkpoint_topic, 120)
    elapsed = time.monotonic() - started
    publisher.close()
    return published / elapsed


def run_raw_producer(
    settings: CdcSettings,
    records: list[tuple[bytes | None, bytes, ProducedHeaders]],
    topic: str,
    total: int,
    *,
    with_headers: bool = True,
    positional: bool = False,
) -> float:
    """Events per second of confluent-kafka alone, sending prepared records (key, value and,
    unless ``with_headers`` is off, the contract headers) with the same configuration;
    ``positional`` passes the headers as the eighth positional argument instead of a keyword."""
    producer = Producer(producer_config(settings))
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    produce = producer.produce
    poll = producer.poll
    started = time.monotonic()
    last_report = started
    count = len(records)
    for number in range(total):
        key, value, headers = records[number % count]
        while True:
            try:
                if positional:
                    produce(topic, value, key, -1, None, None, 0, headers)
                elif with_headers:
                    produce(topic, value, key, headers=headers)
                else:
                    produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let librdkafka send some
                poll(0.05)
        if number % 10_000 == 0:
            poll(0)
            now = time.monotonic()
            if now - last_report >= 5:
                _progress("raw producer", number, total, started)
                last_report = now
    producer.flush(120)
    return total / (time.monotonic() - started)


def _keep_best(figures: dict[str, Any], side: str, rate: float, cpu_seconds: float, total: int) -> None:
    """Keep a side's best rate, with the CPU this process spent per event in that run
    (Python, the encoding thread and librdkafka's threads; the broker not included)."""
    if rate > figures[f"{side}_events_per_second"]:
        figures[f"{side}_events_per_second"] = round(rate)
        figures[f"{side}_cpu_us_per_event"] = round(cpu_seconds / total * 1e6, 2)


def write_table(results: dict[str, Any]) -> None:
    """The README-ready results table, between markers in docs/cdc_service.md."""
    lines = [
        TABLE_START,
        f"Measured {results['measured_at']} on {results['machine']} (load average {results['load_average'][0]} "
        f"at the start, {results['load_average'][1]} at the end): {results['events']:,} events, "
        f"{results['average_event_bytes']:,} bytes of BSON each on average, into a local single-node Kafka broker.",
        "",
        "| value format | cdc_service events/s | raw producer events/s (same records) | ratio (target 0.8) | "
        "raw, positional call: events/s | ratio | raw, no headers: events/s | ratio | "
        "CPU µs/event: cdc_service / raw / raw positional / raw no headers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, figures in results["formats"].items():
        lines.append(
            f"| {name} | {figures['service_events_per_second']:,.0f} | {figures['raw_events_per_second']:,.0f} | "
            f"{figures['ratio']:.2f} | {figures['raw_positional_events_per_second']:,.0f} | "
            f"{figures['ratio_to_raw_positional']:.2f} | {figures['raw_no_headers_events_per_second']:,.0f} | "
            f"{figures['ratio_to_raw_without_headers']:.2f} | {figures['service_cpu_us_per_event']:.1f} / "
            f"{figures['raw_cpu_us_per_event']:.1f} / {figures['raw_positional_cpu_us_per_event']:.1f} / "
            f"{figures['raw_no_headers_cpu_us_per_event']:.1f} |"
        )
    lines += [
        "",
        "The baseline is the raw confluent-kafka producer sending the very records cdc_service sends (key, value and "
        "the contract's four headers, prepared in advance) with the same configuration, in the ordinary call form "
        "`produce(topic, value, key, headers=headers)`. cdc_service calls `produce` with positional arguments only "
        "(no keyword parsing in confluent-kafka); the raw producer calling it that way is shown as a reference, and "
        "so is the raw producer without headers. CPU is this process's (Python, the encoding thread, librdkafka), "
        "not the broker's.",
    ]
    lines.append(TABLE_END)
    if not DOC_PATH.exists():
        return
    text = DOC_PATH.read_text()
    block = "\n".join(lines)
    if TABLE_START in text and TABLE_END in text:
        text = re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: block, text, flags=re.S)
        DOC_PATH.write_text(text)


def main(results_dir: Path) -> dict[str, Any]:
    total = int(os.environ.get("CDC_BENCH_EVENTS", DEFAULT_EVENTS))
    repeats = int(os.environ.get("CDC_BENCH_REPEATS", 2))
    recorded_count = min(RECORDED_EVENTS, total)
    print(f"recording a change stream of {recorded_count:,} events...", file=sys.stderr, flush=True)
    recorded = record_change_stream(recorded_count)
    average = sum(len(event.raw) for batch in recorded for event in batch) // recorded_count
    load_before = os.getloadavg()[0]
    work_dir = Path(tempfile.mkdtemp(prefix="bench-cdc-", dir=PROJECT_ROOT / "build"))
    broker = start_kafka(work_dir / "kafka", heap="1g")
    formats: dict[str, dict[str, float]] = {}
    try:
        runs = []
        for value_format in (ValueFormat.JSON, ValueFormat.BSON):
            name = f"b{uuid.uuid4().hex[:8]}"
            settings = CdcSettings(
                mongo_uri="mongodb://unused",
                name=name,
                kafka={"bootstrap_servers": broker.bootstrap_servers},
                topics={"prefix": name, "checkpoint_topic": f"{name}.checkpoints", "dead_letter_topic": f"{name}.dlq"},
                producer={"value_format": value_format.value},
            )
            payloads = [
                (event.key, event.value, headers_for(event, value_format))
                for batch in recorded
                for event in encode_events(batch, value_format)
            ]
            EventPublisher(settings).topics.ensure(f"{name}.raw")
            runs.append((value_format.value, settings, payloads))
            formats[value_format.value] = {
                "service_events_per_second": 0,
                "raw_events_per_second": 0,
                "raw_positional_events_per_second": 0,
                "raw_no_headers_events_per_second": 0,
                "service_cpu_us_per_event": 0.0,
                "raw_cpu_us_per_event": 0.0,
                "raw_positional_cpu_us_per_event": 0.0,
                "raw_no_headers_cpu_us_per_event": 0.0,
            }
        # Round-robin over formats and sides, best of each: the machine is shared, so its load
        # drifts, and every figure gets the same chances.
        for attempt in range(1, repeats + 1):
            for name, settings, payloads in runs:
                figures = formats[name]
                print(f"{name}: raw confluent-kafka producer ({attempt}/{repeats})...", file=sys.stderr, flush=True)
                cpu = time.process_time()
                rate = run_raw_producer(settings, payloads, f"{settings.topics.prefix}.raw", total)
                _keep_best(figures, "raw", rate, time.process_time() - cpu, total)
                print(f"{name}: raw producer, positional call ({attempt}/{repeats})...", file=sys.stderr, flush=True)
                cpu = time.process_time()
                rate = run_raw_producer(settings, payloads, f"{settings.topics.prefix}.raw", total, positional=True)
                _keep_best(figures, "raw_positional", rate, time.process_time() - cpu, total)
                print(f"{name}: raw producer, no headers ({attempt}/{repeats})...", file=sys.stderr, flush=True)
                cpu = time.process_time()
                rate = run_raw_producer(settings, payloads, f"{settings.topics.prefix}.raw", total, with_headers=False)
                _keep_best(figures, "raw_no_headers", rate, time.process_time() - cpu, total)
                print(f"{name}: cdc_service publisher ({attempt}/{repeats})...", file=sys.stderr, flush=True)
                cpu = time.process_time()
                rate = run_service_path(settings, recorded, total)
                _keep_best(figures, "service", rate, time.process_time() - cpu, total)
        for name, figures in formats.items():
            figures["ratio"] = round(figures["service_events_per_second"] / figures["raw_events_per_second"], 3)
            figures["ratio_to_raw_positional"] = round(
                figures["service_events_per_second"] / figures["raw_positional_events_per_second"], 3
            )
            figures["ratio_to_raw_without_headers"] = round(
                figures["service_events_per_second"] / figures["raw_no_headers_events_per_second"], 3
            )
            print(
                f"{name}: {figures['service_events_per_second']:,}/s vs raw {figures['raw_events_per_second']:,}/s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    fastest = max(formats, key=lambda name: formats[name]["service_events_per_second"])
    results: dict[str, Any] = {
        "benchmark": "cdc publish path",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # others' work skews the figures
        "events": total,
        "repeats": repeats,
        "average_event_bytes": average,
        "formats": formats,
        "fastest_format": fastest,
        "ratio_to_raw_producer": formats[fastest]["ratio"],
        "ratio_to_raw_producer_json": formats["json"]["ratio"],
        "ratio_to_raw_producer_bson": formats["bson"]["ratio"],
        "target_ratio": TARGET_RATIO,
        "targets_met": all(figures["ratio"] >= TARGET_RATIO for figures in formats.values()),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "cdc.json").write_text(json.dumps(results, indent=2))
    write_table(results)
    return results


if __name__ == "__main__":
    print(json.dumps(main(PROJECT_ROOT / "build" / "bench"), indent=2))
