"""S3 for tests: moto in server mode on 127.0.0.1 (a real HTTP S3 endpoint), a fresh bucket per test.

The server runs in this process (ThreadedMotoServer), so stopping it and starting another on the same port
keeps the buckets: a test can cut the store off mid-upload and look at what was left afterwards. Its
smallest multipart part is lowered (S3_UPLOAD_PART_MIN_SIZE) so multipart paths run on small files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid

from tests.support.ports import free_port

ACCESS_KEY = "tunewire-test"
SECRET_KEY = "tunewire-test-secret"
REGION = "us-east-1"
MIN_PART = 256 << 10


class MotoS3:
    """A moto S3 server on 127.0.0.1: start(), stop(), restart() on the same port, create_bucket()."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(MIN_PART))
        from moto.s3 import models
        from moto.server import ThreadedMotoServer

        models.S3_UPLOAD_PART_MIN_SIZE = MIN_PART  # in case moto was imported before the variable was set
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def restart(self) -> None:
        """A new server on the same port; the buckets and objects are still there (moto keeps them in memory)."""
        self.stop()
        self.start()

    def client(self):
        """A boto3 client (moto's own dependency) for what the store under test does not do: buckets, tampering."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self) -> str:
        name = f"tw-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name


def s3_options(server: MotoS3, bucket: str, **overrides) -> dict:
    """open_store keyword options for `bucket` on `server`: explicit test credentials, small parts, quick
    retries (overrides win)."""
    options = dict(endpoint_url=server.endpoint, region=REGION, access_key_id=ACCESS_KEY,
                   secret_access_key=SECRET_KEY, part_size=1 << 20, max_concurrency=2, max_retries=2,
                   retry_timeout_s=5.0, init_backoff_s=0.01, max_backoff_s=0.05, connect_timeout_s=2.0,
                   request_timeout_s=30.0)
    options.update(overrides)
    return options


@contextlib.contextmanager
def running_moto():
    """A started MotoS3, stopped on the way out (a module-scoped fixture's body)."""
    server = MotoS3().start()
    try:
        yield server
    finally:
        server.stop()
