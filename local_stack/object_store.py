"""An S3-compatible object store on 127.0.0.1: SeaweedFS (``weed mini``), for tests and the demo.

A real server, not a mock: SeaweedFS's master, volume server, filer and S3 gateway in one
process, built from source by ``make setup`` (``.cache/bin/weed``). It is chosen because its
S3 gateway implements conditional writes (``PUT`` with ``If-None-Match: *`` creates an
object only if it does not exist, checked under the object's lock), which is what Delta
commits from several writers need (``lakehouse_common.object_store``); it is Apache-2.0
licensed and builds with ``go build`` alone. The gateway requires signed requests: one
identity with a random key pair per start, and the buckets are created at start.
WebDAV, the admin UI, Iceberg/Lance catalogs and telemetry are off; logs stay in
``<work_dir>/logs`` and are kept when something fails.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse_common.errors import StackError
from local_stack.paths import tool_path
from local_stack.processes import free_port, stop_process, tail

logger = logging.getLogger(__name__)

DEFAULT_BUCKET = "lakehouse"
REGION = "us-east-1"
DESCRIPTION = "SeaweedFS S3 gateway (weed mini)"


@dataclass
class ObjectStore:
    """A running SeaweedFS: its S3 endpoint, the key pair it accepts, and its buckets."""

    work_dir: Path
    s3_port: int
    access_key_id: str
    secret_access_key: str
    buckets: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "logs" / "weed.log"

    def storage_options(self) -> dict[str, str]:
        """deltalake storage options for this store (every layer takes the same vocabulary)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ALLOW_HTTP": "true",
            "AWS_CONDITIONAL_PUT": "etag",
        }

    def lake_root(self, prefix: str, bucket: str = DEFAULT_BUCKET) -> str:
        """``s3://<bucket>/<prefix>``: a lake of its own in this store."""
        return f"s3://{bucket}/{prefix.strip('/')}"

    def stop(self, keep_logs: bool = False, timeout: float = 30.0) -> None:
        exit_code = stop_process(self.process, timeout=timeout)
        if exit_code not in (None, 0, -15, 143):
            keep_logs = True
            logger.warning("SeaweedFS exited with %s; logs kept in %s", exit_code, self.log_file.parent)
        if keep_logs:
            shutil.rmtree(self.work_dir / "data", ignore_errors=True)
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def weed_executable() -> Path:
    weed = tool_path("weed")
    if not weed.exists():
        raise StackError(f"{weed} is missing: `make setup` builds SeaweedFS from source")
    return weed


_START_ATTEMPTS = 3
_PORT_TAKEN = "address already in use"


def start_object_store(
    work_dir: Path,
    *,
    buckets: tuple[str, ...] = (DEFAULT_BUCKET,),
    authenticated: bool = True,
    timeout: float = 120.0,
) -> ObjectStore:
    """Start SeaweedFS with fresh storage in ``work_dir``; returns once its S3 gateway answers signed requests.

    ``authenticated=False`` starts it with no identity, so it serves anyone and checks no
    signature (tests put a header-rewriting proxy in front of such a store).
    """
    weed = weed_executable()
    (work_dir / "data").mkdir(parents=True, exist_ok=True)
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "lakehouse" + secrets.token_hex(6), secrets.token_urlsafe(30)
    identities = work_dir / "s3-identities.json"
    identities.touch(mode=0o600)
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lakehouse",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    # free_port() only finds ports free now: another process of the machine (a second test worker's
    # Spark or broker) may take one before SeaweedFS binds it. Such a start is retried on new ports.
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            store = _launch(weed, work_dir, identities if authenticated else None, access_key, secret_key, buckets, timeout)
            break
        except StackError as error:
            if attempt == _START_ATTEMPTS or _PORT_TAKEN not in str(error):
                raise
            logger.warning(
                "SeaweedFS could not bind a port (attempt %d of %d): starting it on other ports", attempt, _START_ATTEMPTS
            )
    logger.info("SeaweedFS S3 gateway ready on %s (logs in %s)", store.endpoint_url, store.log_file.parent)
    return store


def _launch(
    weed: Path,
    work_dir: Path,
    identities: Path | None,
    access_key: str,
    secret_key: str,
    buckets: tuple[str, ...],
    timeout: float,
) -> ObjectStore:
    ports = {
        name: free_port() for name in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    }
    command = [
        str(weed), "mini",
        f"-dir={work_dir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
        *([f"-s3.config={identities}"] if identities is not None else []),
        f"-bucket={','.join(buckets)}",
        "-webdav=false", "-admin.ui=false",
    ]  # fmt: skip
    with open(work_dir / "logs" / "weed.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir, start_new_session=True)
    store = ObjectStore(work_dir, ports["s3"], access_key, secret_key, buckets, process)
    try:
        _wait_until_ready(store, timeout)
    except BaseException:
        store.stop(keep_logs=True, timeout=5)
        raise
    return store


def _wait_until_ready(store: ObjectStore, timeout: float) -> None:
    """Until every bucket is listable with the store's credentials (pyarrow signs the requests)."""
    from pyarrow import fs

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if store.process is not None and store.process.poll() is not None:
            raise StackError(f"SeaweedFS exited with {store.process.returncode} while starting:\n{tail(store.log_file)}")
        try:
            urllib.request.urlopen(f"{store.endpoint_url}/healthz", timeout=2).close()
            filesystem = fs.S3FileSystem(
                access_key=store.access_key_id,
                secret_key=store.secret_access_key,
                region=REGION,
                endpoint_override=f"127.0.0.1:{store.s3_port}",
                scheme="http",
                connect_timeout=2,
                request_timeout=5,
            )
            for bucket in store.buckets:
                filesystem.get_file_info(fs.FileSelector(bucket, allow_not_found=False))
            return
        except (OSError, urllib.error.URLError) as error:
            last_error = error
        time.sleep(0.3)
    raise StackError(f"SeaweedFS not ready after {timeout:.0f}s ({last_error}); log {store.log_file}:\n{tail(store.log_file)}")


__all__ = ["DEFAULT_BUCKET", "DESCRIPTION", "REGION", "ObjectStore", "start_object_store", "weed_executable"]
