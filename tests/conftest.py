"""Session-wide real components for the suite: a Kafka broker, the MongoDB stand-in, an
S3-compatible object store, Spark, and a Spark cluster with its Thrift Server.

Nothing is mocked. The broker is Apache Kafka (KRaft) with a PLAINTEXT listener and a
SASL_PLAINTEXT/SCRAM one; the stand-in is mongo-java-server (not MongoDB: see
local_stack/mongo.py); the object store is SeaweedFS's S3 gateway (one per session, a
lake prefix per test); Spark runs local[2] with Delta and S3A; the cluster is Spark's
standalone master and a worker with the Thrift Server (started once, by the tests that
need it). Tests taking the ``lake`` fixture run on a local directory and on the object
store. A real MongoDB replica set comes from testcontainers where a Docker engine
answers, and its tests skip, with the reason, where none does.
"""

from __future__ import annotations

import http.client
import http.server
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from local_stack.kafka import KafkaBroker, start_kafka
from local_stack.mongo import STANDIN_DESCRIPTION, MongoStandIn, start_mongo_standin
from local_stack.object_store import ObjectStore, start_object_store
from local_stack.paths import PROJECT_ROOT
from local_stack.spark_cluster import SparkCluster, start_spark_cluster

if TYPE_CHECKING:
    from spark_jobs.settings import SparkSettings

TEST_RUN_DIR = PROJECT_ROOT / "build" / "test-runs"
SCRAM_USER = "lakehouse-test"


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    """A directory for this test session's brokers, lakes and logs (kept if tests fail)."""
    path = TEST_RUN_DIR / time.strftime("%Y%m%d-%H%M%S-") / uuid.uuid4().hex[:6]
    path.mkdir(parents=True)
    yield path


@pytest.fixture(scope="session")
def kafka_broker(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[KafkaBroker]:
    broker = start_kafka(run_dir / "kafka", scram_users={SCRAM_USER: secrets.token_urlsafe(16)})
    yield broker
    broker.stop(keep_logs=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def scram_user() -> str:
    """The SCRAM-SHA-512 user the session broker knows (password: ``kafka_broker.scram_users``)."""
    return SCRAM_USER


@pytest.fixture(scope="session")
def kafka_admin(kafka_broker: KafkaBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})


@pytest.fixture
def new_topic(kafka_admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Create uuid-named topics for one test; they are deleted afterwards."""
    created: list[str] = []

    def create(partitions: int = 3, config: dict[str, str] | None = None, prefix: str = "test") -> str:
        name = f"{prefix}.{uuid.uuid4().hex}"
        futures = kafka_admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def topic(new_topic: Callable[..., str]) -> str:
    """A fresh three-partition topic with a uuid name."""
    return new_topic()


@pytest.fixture(scope="session")
def mongo_standin(run_dir: Path) -> Iterator[MongoStandIn]:
    standin = start_mongo_standin(run_dir / "mongo-standin")
    yield standin
    standin.stop()


@dataclass(frozen=True)
class MongoEndpoint:
    """A MongoDB to test against: the stand-in or a real replica set."""

    uri: str
    kind: str  # "standin" or "replica_set"
    description: str

    @property
    def is_real(self) -> bool:
        return self.kind == "replica_set"


def _docker_unreachable_reason() -> str | None:
    """None when a Docker engine answers; otherwise why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"docker info failed: {error}"
    if result.returncode != 0:
        return f"no Docker engine reachable ({result.stderr.decode(errors='replace').strip()[:200]})"
    return None


@pytest.fixture(scope="session")
def real_replica_set() -> Iterator[MongoEndpoint]:
    """A single-node MongoDB 7 replica set in Docker (testcontainers), or a skip with the reason."""
    reason = _docker_unreachable_reason()
    if reason is not None:
        pytest.skip(f"real MongoDB replica set unavailable: {reason}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("mongo:7.0").with_command("--replSet rs0 --bind_ip_all").with_exposed_ports(27017)
    container.start()
    try:
        wait_for_logs(container, "Waiting for connections", timeout=60)
        container.exec(["mongosh", "--quiet", "--eval", "rs.initiate({_id:'rs0',members:[{_id:0,host:'localhost:27017'}]})"])
        uri = f"mongodb://{container.get_container_host_ip()}:{container.get_exposed_port(27017)}/?directConnection=true"
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=30000)
        deadline = time.monotonic() + 60
        while not client.admin.command("hello").get("isWritablePrimary") and time.monotonic() < deadline:
            time.sleep(0.5)
        client.close()
        yield MongoEndpoint(uri, "replica_set", "MongoDB 7.0 replica set (testcontainers)")
    finally:
        container.stop()


@pytest.fixture(params=["standin", pytest.param("replica_set", marks=pytest.mark.real_mongo)])
def mongo_endpoint(request: pytest.FixtureRequest) -> MongoEndpoint:
    """Each test using this runs against the stand-in and, where Docker is, a real replica set."""
    if request.param == "standin":
        standin: MongoStandIn = request.getfixturevalue("mongo_standin")
        return MongoEndpoint(standin.uri, "standin", STANDIN_DESCRIPTION)
    return request.getfixturevalue("real_replica_set")


@pytest.fixture
def mongo_client(mongo_endpoint: MongoEndpoint) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_endpoint.uri)
    yield client
    client.close()


@pytest.fixture
def mongo_database(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.database.Database]:
    """A uuid-named database, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(scope="session")
def object_store(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    """SeaweedFS's S3 gateway, one per session; each test's lake is a prefix of its bucket."""
    store = start_object_store(run_dir / "object-store")
    yield store
    store.stop(keep_logs=request.session.testsfailed > 0)


@dataclass(frozen=True)
class Lake:
    """A lake root to test on, and the storage options every reader and writer needs for it."""

    kind: str  # "local" or "s3"
    root: str
    storage_options: dict[str, str]

    def table(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.object_store)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """Each test using this runs on a local directory and on the object store."""
    if request.param == "local":
        return Lake("local", str(tmp_path / "lake"), {})
    store: ObjectStore = request.getfixturevalue("object_store")
    return Lake("s3", store.lake_root(f"tests/{uuid.uuid4().hex}"), store.storage_options())


@pytest.fixture(scope="session")
def spark(run_dir: Path, object_store: ObjectStore):  # noqa: ANN201 - pyspark is imported lazily
    """Spark local[2] with Delta, its warehouse and metastore in this session's directory, S3A for the object store."""
    from spark_jobs.session import SparkSettings, build_spark_session

    settings = SparkSettings(
        master="local[2]",
        app_name="lakehouse-tests",
        warehouse_dir=run_dir / "spark" / "warehouse",
        metastore_dir=run_dir / "spark" / "metastore",
        driver_memory="1g",
        shuffle_partitions=2,
    )
    session = build_spark_session(settings, object_store.storage_options())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def _remove_run_dir_when_green(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep a failed session's logs for inspection; clean up after a green one."""
    yield
    if request.session.testsfailed == 0:
        shutil.rmtree(run_dir, ignore_errors=True)


class _DropConditionalHeaders(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the store without If-None-Match / If-Match: a store that ignores them."""

    protocol_version = "HTTP/1.1"
    upstream_port = 0

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {key: value for key, value in self.headers.items() if key.lower() not in ("if-none-match", "if-match")}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header(
                "Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _ProxyServer(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # several writers' connection pools at once
    daemon_threads = True


@dataclass(frozen=True)
class UnconditionalStore:
    """Options to reach a store through the proxy that drops conditional headers, and to reach it directly."""

    storage_options: dict[str, str]
    direct_storage_options: dict[str, str]


@pytest.fixture(scope="session")
def store_ignoring_conditional_writes(run_dir: Path) -> Iterator[UnconditionalStore]:
    """Storage options of a store that ignores conditional writes, as some S3-compatible servers do.

    A second SeaweedFS, without identities (so no signature covers the headers), behind a
    proxy that drops If-None-Match: the failure mode the writer's start probe must refuse.
    """
    store = start_object_store(run_dir / "object-store-unconditional", authenticated=False)
    handler = type("Handler", (_DropConditionalHeaders,), {"upstream_port": store.s3_port})
    proxy = _ProxyServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, name="unconditional-proxy", daemon=True)
    thread.start()
    proxied = {**store.storage_options(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}"}
    yield UnconditionalStore(proxied, store.storage_options())
    proxy.shutdown()
    proxy.server_close()
    store.stop()


def small_spark_settings(work: Path, **overrides: Any) -> SparkSettings:
    """Spark settings for the suite's small data, its warehouse and metastore under ``work``."""
    from spark_jobs.settings import SparkSettings

    defaults: dict[str, Any] = {
        "warehouse_dir": work / "warehouse",
        "metastore_dir": work / "metastore",
        "driver_memory": "1g",
        "shuffle_partitions": 1,
        "extra_conf": {"spark.sql.codegen.wholeStage": "false"},  # small data: compiling costs more than it saves
    }
    return SparkSettings(**{**defaults, **overrides})


@pytest.fixture(scope="session")
def small_spark() -> Callable[..., SparkSettings]:
    """``small_spark_settings`` for tests outside this file (conftest modules are not importable)."""
    return small_spark_settings


@pytest.fixture(scope="session")
def spark_cluster(run_dir: Path, object_store: ObjectStore, request: pytest.FixtureRequest) -> Iterator[SparkCluster]:
    """Spark's standalone master, a worker and the Thrift Server, on the object-store lake's S3A settings."""
    work = run_dir / "spark-cluster"
    settings = small_spark_settings(work, shuffle_partitions=2)
    cluster = start_spark_cluster(
        work / "processes", settings, object_store.storage_options(), worker_cores=2, worker_memory="2g", executor_memory="1g"
    )
    yield cluster
    cluster.stop(keep_logs=request.session.testsfailed > 0)


# Tests that share an expensive session fixture run on one pytest-xdist worker, so it is made once:
# the dbt-built lakes of tests/dbt (three dbt runs each, the local and the object-store lake one
# after the other: built side by side on two cores they took twice as long each, 2026-12-02),
# with the Spark cluster that builds the object-store lake and test_spark_cluster.py on it, and
# the in-process Spark session of tests/spark_jobs. Every other file is a unit of its own.
_SHARED_SCOPES = {
    **dict.fromkeys(
        (
            *(f"tests/dbt/{name}.py" for name in ("test_drift", "test_gold", "test_history", "test_project_runs", "test_silver")),
            "tests/local_stack/test_spark_cluster.py",
        ),
        "built_lake",
    ),
    **dict.fromkeys(("tests/spark_jobs/test_session.py", "tests/spark_jobs/test_maintenance.py"), "spark"),
}
# The longest scopes are handed out first (longest-processing-time first), so no worker starts
# a ten-minute build while the other has nothing left to run.
_LONGEST_FIRST = (
    "built_lake",
    "tests/chaos/test_run.py",
    "tests/demo/test_demo.py",
    "tests/spark_jobs/test_scaffold.py",
)


def _scope(nodeid: str) -> str:
    path = nodeid.partition("::")[0]
    return _SHARED_SCOPES.get(path, path)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collection order is the order xdist hands out scopes (`make test` passes
    --no-loadscope-reorder): the longest first, then as collected."""
    rank = {scope: position for position, scope in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_scope(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole files per worker, with the files of one shared fixture together (pytest 9 ignores
    the node-id suffix that `--dist loadgroup` relies on, so the grouping is done here)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return SharedFixtureScheduling(config, log)
