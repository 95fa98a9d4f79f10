"""``cdc-service``: run, snapshot, replay, and checkpoint show/set.

Configuration comes from ``CDC_*`` environment variables and/or ``--config file.yaml``;
it is validated before anything starts. See docs/cdc_service.md. Exit codes are
``lakehouse_common.lifecycle.ExitCode`` (docs/runbook.md lists them).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from bson import json_util
from confluent_kafka.admin import AdminClient

from cdc_service.checkpoints import CopyState, load_checkpoints, snapshot_key, stream_key
from cdc_service.metrics import CdcMetrics
from cdc_service.planning import covered_collections, mongo_client, namespace_filter, plan_streams, server_hello
from cdc_service.positions import Position, parse_time, timestamp_text
from cdc_service.publisher import TopicManager, client_config
from cdc_service.replay import ReplayPlan, plan_from_bronze, plan_from_time, plan_from_token, write_plan, write_records
from cdc_service.scope import StreamSpec, choose_layout
from cdc_service.service import CdcService
from cdc_service.settings import CdcSettings
from cdc_service.signals import SignalBox, SignalStatus, value_text
from lakehouse_common.cli import config_option, load_cli_settings
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS
from lakehouse_common.errors import ConfigError, LakehouseError
from lakehouse_common.lifecycle import ExitCode, stop_on_signals
from lakehouse_common.redaction import redact

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
checkpoint_app = typer.Typer(add_completion=False, help="Show or set stream checkpoints.", no_args_is_help=True)
app.add_typer(checkpoint_app, name="checkpoint")

ConfigOption = config_option("CDC_CONFIG")
StreamOption = Annotated[
    list[str] | None,
    typer.Option("--stream", "-s", help="Stream id (deployment, db:<name>, coll:<db>.<collection>); repeatable."),
]


def _settings(config: Path | None) -> CdcSettings:
    return load_cli_settings(CdcSettings, config, "cdc-service")


def _serve(service: CdcService, *, snapshot_only: bool = False, force_snapshot: list[str] | None = None) -> None:
    """Run the service: a first SIGTERM/SIGINT drains and stops it, a second exits at once."""
    server = service.serve_http()
    try:
        with stop_on_signals(service.request_stop):
            code = service.run(snapshot_only=snapshot_only, force_snapshot=force_snapshot)
    finally:
        server.stop()
    raise typer.Exit(code)


def _fail(error: Exception) -> typer.Exit:
    """Print a command's error; a bad argument or setting is BAD_CONFIGURATION, anything else FAILED."""
    typer.echo(f"error: {redact(str(error))}", err=True)
    bad_input = isinstance(error, (ValueError, ConfigError))
    return typer.Exit(ExitCode.BAD_CONFIGURATION if bad_input else ExitCode.FAILED)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Snapshot what has no checkpoint yet, then stream changes to Kafka until stopped."""
    settings = _settings(config)
    _serve(CdcService(settings, metrics=CdcMetrics()))


@app.command()
def snapshot(
    config: ConfigOption = None,
    stream: StreamOption = None,
    collection: Annotated[
        list[str] | None, typer.Option("--collection", help="Namespace <db>.<collection> to copy (running service); repeatable.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--filter", help='Copy only the documents matching this query (Extended JSON): \'{"status": "open"}\'.'),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Do not ask a running service: copy at a fresh position here (service stopped)."),
    ] = False,
    accept_timeout: Annotated[
        float, typer.Option(help="Seconds a running service has to accept the signal before the copy runs offline.")
    ] = 15.0,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the copy until the service reports it done.")] = True,
) -> None:
    """Copy collections again (all, or --stream / --collection), without stopping the service.

    With ``snapshot.signal_collection`` set, the command writes a signal there: the running
    service accepts it and copies in chunks while it streams (progress is printed; exit 0
    once done). If no service accepts it within --accept-timeout, the signal is withdrawn
    and the copy runs offline instead: the streams' collections are copied at a fresh
    position, which is recorded as their checkpoint, so a following ``run`` streams every
    change made since (also what --offline does, and what happens without a signal
    collection).
    """
    settings = _settings(config)
    if not offline and settings.snapshot.signal_collection:
        code = _snapshot_through_service(settings, stream or [], collection or [], query, accept_timeout, wait)
        if code is not None:
            raise typer.Exit(code)
    elif query or collection:
        typer.echo("error: --filter and --collection need a running service with snapshot.signal_collection "
                   "(CDC_SNAPSHOT__SIGNAL_COLLECTION)", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION)
    _serve(CdcService(settings), snapshot_only=True, force_snapshot=list(stream or []))


def _snapshot_through_service(
    settings: CdcSettings, streams: list[str], collections: list[str], query_text: str | None, accept_timeout: float, wait: bool
) -> ExitCode | None:
    """Signal the running service and follow the copy; None when no service answered (copy offline)."""
    assert settings.snapshot.signal_collection is not None
    client = mongo_client(settings)
    try:
        try:
            query = json_util.loads(query_text, json_options=EXTENDED_JSON_OPTIONS) if query_text else None
            if query is not None and not isinstance(query, dict):
                raise ValueError("--filter must be a query document")
            wanted = collections or _covered_by(settings, client, streams)
        except ValueError as error:
            raise _fail(error) from None
        if not wanted:
            typer.echo("error: no collection to copy", err=True)
            return ExitCode.BAD_CONFIGURATION
        box = SignalBox(client, settings.snapshot.signal_collection)
        signal_id = box.send(wanted, query)
        typer.echo(f"signal {signal_id} written to {box.namespace}: copy {', '.join(wanted)}"
                   f"{' where ' + query_text if query_text else ''}; waiting up to {accept_timeout:g}s for the running service")
        try:
            answer = _wait_for_answer(box, signal_id, accept_timeout)
        except KeyboardInterrupt:
            # Interrupted before any service answered: no copy starts later behind the operator's back.
            withdrawn = box.withdraw(signal_id)
            typer.echo(f"interrupted; signal {signal_id} " + ("withdrawn" if withdrawn else "was answered already"), err=True)
            return ExitCode.INTERRUPTED
        if answer is None and box.withdraw(signal_id):
            if query is not None or collections:
                typer.echo(f"no running service accepted the signal within {accept_timeout:g}s (withdrawn); "
                           "--filter and --collection need one: start the service and try again", err=True)
                return ExitCode.FAILED
            typer.echo(f"no running service accepted the signal within {accept_timeout:g}s (withdrawn): "
                       "copying offline, at a fresh position, as with the service stopped")
            return None
        answer = answer or box.status(signal_id) or {}
        if answer.get("status") == SignalStatus.REJECTED:
            typer.echo(f"the service {answer.get('service')} rejected the signal: {answer.get('reason')}", err=True)
            return ExitCode.BAD_CONFIGURATION
        typer.echo(f"the running service {answer.get('service')} accepted signal {signal_id}: "
                   "copying in chunks while it streams")
        if not wait:
            return ExitCode.OK
        return _follow_copy(settings, box, signal_id, wanted)
    finally:
        client.close()


def _covered_by(settings: CdcSettings, client: Any, streams: list[str]) -> list[str]:
    """The collections the named streams cover (every stream's when none is named)."""
    namespaces = namespace_filter(settings)
    if streams:
        specs = [StreamSpec.parse(stream_id) for stream_id in streams]
    else:
        specs = plan_streams(client, choose_layout(settings.stream.layout, server_hello(client), namespaces), namespaces)
    return sorted({namespace for spec in specs for namespace in covered_collections(client, spec, namespaces)})


def _wait_for_answer(box: SignalBox, signal_id: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        document = box.status(signal_id)
        if document is not None and document.get("status") in (SignalStatus.ACCEPTED, SignalStatus.REJECTED, SignalStatus.DONE):
            return document
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


def _follow_copy(settings: CdcSettings, box: SignalBox, signal_id: str, wanted: list[str]) -> ExitCode:
    """Print the copy's progress (from the checkpoints) until the signal is done; Ctrl-C stops following only."""
    stop = threading.Event()
    last_report = 0.0
    with stop_on_signals(stop):
        while not stop.wait(1.0):
            document = box.status(signal_id) or {}
            if document.get("status") == SignalStatus.DONE:
                finished = document.get("finished") or []
                for entry in finished:
                    typer.echo(f"{entry.get('namespace')}: {entry.get('state')}, {entry.get('published')} published, "
                               f"{entry.get('superseded')} superseded by the stream, {entry.get('chunks')} chunks, "
                               f"{entry.get('seconds')}s{' - ' + entry['detail'] if entry.get('detail') else ''}")
                failed = [entry for entry in finished if entry.get("state") != CopyState.DONE]
                return ExitCode.FAILED if failed else ExitCode.OK
            if time.monotonic() - last_report >= 5.0:
                last_report = time.monotonic()
                try:
                    copies = load_checkpoints(client_config(settings), settings.topics.checkpoint_topic, settings.name).copies
                except LakehouseError:
                    continue
                for namespace in wanted:
                    progress = copies.get(namespace)
                    if progress is not None and progress.signal_id == value_text(signal_id):
                        remaining = max((progress.estimate or 0) - progress.copied - progress.superseded, 0)
                        typer.echo(f"{namespace}: {progress.chunks} chunks, {progress.copied} published, "
                                   f"{progress.superseded} superseded, about {remaining} to go")
    typer.echo(f"stopped following; the service goes on copying (signal {signal_id} in {box.namespace})")
    return ExitCode.INTERRUPTED


def _streams(settings: CdcSettings) -> tuple[list[StreamSpec], dict[str, list[str]]]:
    client = mongo_client(settings)
    try:
        namespaces = namespace_filter(settings)
        layout = choose_layout(settings.stream.layout, server_hello(client), namespaces)
        specs = plan_streams(client, layout, namespaces)
        covered = {spec.stream_id: covered_collections(client, spec, namespaces) for spec in specs}
        return specs, covered
    finally:
        client.close()


def _ensure_checkpoint_topic(settings: CdcSettings) -> None:
    TopicManager(AdminClient(client_config(settings)), settings).ensure(
        settings.topics.checkpoint_topic,
        compacted=True,
        partitions=1,
        replication=settings.topics.checkpoint_replication_factor,
    )


@app.command()
def replay(
    config: ConfigOption = None,
    stream: StreamOption = None,
    from_token: Annotated[str | None, typer.Option(help='Resume token as Extended JSON: {"_data": "..."}.')] = None,
    from_time: Annotated[str | None, typer.Option(help="Operation time, ISO-8601 with offset (2024-05-01T12:00:00Z).")] = None,
    from_bronze: Annotated[
        str | None, typer.Option(help="Lake root: resume from what each collection's bronze table landed.")
    ] = None,
    storage_option: Annotated[
        list[str] | None, typer.Option(help="Object-store option for the lake, KEY=VALUE; repeatable.")
    ] = None,
    then_run: Annotated[bool, typer.Option("--run/--no-run", help="Keep streaming after moving the checkpoints.")] = True,
) -> None:
    """Move streams back (to a token, a time or a bronze table's marks), then stream from there.

    Replayed events keep their ids; the bronze writer drops those it already landed.
    Stop a running service first (exactly-once mode fences it).
    """
    settings = _settings(config)
    sources = [value for value in (from_token, from_time, from_bronze) if value]
    if len(sources) != 1:
        typer.echo("error: give exactly one of --from-token, --from-time, --from-bronze", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION)
    try:
        specs, covered = _streams(settings)
        plan: ReplayPlan
        if from_token:
            plan = plan_from_token(specs, from_token, stream or [])
        elif from_time:
            plan = plan_from_time(specs, Position.from_time(parse_time(from_time)), stream or [])
        else:
            options = dict(option.split("=", 1) for option in storage_option or [])
            plan = plan_from_bronze(specs, covered, from_bronze or "", stream or [], options)
        _ensure_checkpoint_topic(settings)
        write_plan(settings, plan)
    except (ValueError, LakehouseError) as error:
        raise _fail(error) from None
    for stream_id, position in plan.positions.items():
        typer.echo(f"{stream_id}: {position.describe()}")
    for stream_id in plan.resnapshot:
        typer.echo(f"{stream_id}: snapshot again")
    for note in plan.notes:
        typer.echo(f"  {note}")
    if then_run:
        _serve(CdcService(settings), force_snapshot=plan.resnapshot)


@checkpoint_app.command("show")
def checkpoint_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print every stream checkpoint and snapshot state of this service."""
    settings = _settings(config)
    try:
        checkpoints = load_checkpoints(client_config(settings), settings.topics.checkpoint_topic, settings.name)
    except LakehouseError as error:
        raise _fail(error) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "streams": {key: json.loads(value.to_json()) for key, value in sorted(checkpoints.streams.items())},
                    "snapshots": {key: json.loads(value.to_json()) for key, value in sorted(checkpoints.snapshots.items())},
                    "copies": {key: json.loads(value.to_json()) for key, value in sorted(checkpoints.copies.items())},
                },
                indent=2,
            )
        )
        return
    if not checkpoints.streams and not checkpoints.snapshots and not checkpoints.copies:
        typer.echo(f"no checkpoints for service {settings.name!r} in {settings.topics.checkpoint_topic}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoints of {settings.name} ({settings.topics.checkpoint_topic})")
    for column in ("stream", "kind", "position", "cluster time", "written", "age", "published"):
        table.add_column(column)
    now = time.time()
    for stream_id, checkpoint in sorted(checkpoints.streams.items()):
        table.add_row(
            stream_id,
            checkpoint.kind,
            checkpoint.position.describe(),
            timestamp_text(checkpoint.cluster_time),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checkpoint.written_at)),
            f"{now - checkpoint.written_at:.0f}s",
            str(checkpoint.events_published),
        )
    console = Console(width=200)
    console.print(table)
    for stream_id, state in sorted(checkpoints.snapshots.items()):
        done = sum(1 for progress in state.collections.values() if progress.done)
        console.print(
            f"snapshot {stream_id}: {'complete' if state.completed else 'in progress'}, "
            f"{done}/{len(state.collections)} collections, at {state.position.describe()}"
        )
    for namespace, progress in sorted(checkpoints.copies.items()):
        console.print(
            f"copy {namespace} ({progress.reason}{', filtered' if progress.filter else ''}): {progress.state}, "
            f"{progress.chunks} chunks, {progress.copied} published, {progress.superseded} superseded by the stream"
            f"{', ' + progress.detail if progress.detail else ''}"
        )


@checkpoint_app.command("set")
def checkpoint_set(
    stream: Annotated[str, typer.Option("--stream", "-s", help="Stream id.")],
    config: ConfigOption = None,
    token: Annotated[str | None, typer.Option(help='Resume token as Extended JSON: {"_data": "..."}.')] = None,
    at_time: Annotated[str | None, typer.Option("--time", help="Operation time, ISO-8601 with offset.")] = None,
    start_after: Annotated[bool, typer.Option(help="Open with startAfter (a token of an invalidate event).")] = False,
    delete: Annotated[bool, typer.Option(help="Remove the checkpoint: the next run snapshots the stream.")] = False,
) -> None:
    """Set (or delete) one stream's checkpoint. Stop the service first."""
    settings = _settings(config)
    if sum(bool(value) for value in (token, at_time, delete)) != 1:
        typer.echo("error: give exactly one of --token, --time, --delete", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION)
    try:
        StreamSpec.parse(stream)
        _ensure_checkpoint_topic(settings)
        if delete:
            write_records(settings, {stream_key(settings.name, stream): None, snapshot_key(settings.name, stream): None})
            typer.echo(f"{stream}: checkpoint deleted")
            return
        position = (
            Position.from_token_text(token, start_after=start_after)
            if token
            else Position.from_time(parse_time(at_time or ""))
        )
        write_plan(settings, ReplayPlan(positions={stream: position}), kind="manual")
    except (ValueError, LakehouseError) as error:
        raise _fail(error) from None
    typer.echo(f"{stream}: {position.describe()}")



if __name__ == "__main__":
    sys.exit(app())
