"""Issue 15, uploads across replicas: a partial upload lives on the replica that received it (its pod's
folder), so a resume that lands on another replica starts over there; the SDK asks that replica the offset
it holds (StartUpload) and re-sends from it, and the upload succeeds. Two real server processes on
127.0.0.1 sharing one PostgreSQL database, each with its own data folder (as pods with their own volumes)."""

from __future__ import annotations

import hashlib

import grpc
import pytest

import tunewire
from tests import tiny
from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tests.support.server_process import ServerProcess
from tunewire.v1 import dataset_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


def test_a_resumed_upload_that_lands_on_another_replica_starts_over_there_and_succeeds(
        tmp_path, models_root, postgres_server):  # noqa: F811 - the fixture imported above
    url = postgres_server.new_database()
    path = tiny.write_jsonl(tmp_path / "sentiment.jsonl", tiny.sentiment_rows(32))
    data = path.read_bytes()
    head = dataset_pb2.UploadHeader(upload_id="across-replicas", name=path.name, size_bytes=len(data),
                                    sha256=hashlib.sha256(data).hexdigest())
    a = ServerProcess(tmp_path / "a", models_root, "--store", url, "--replica-id", "a").start(60)
    b = ServerProcess(tmp_path / "b", models_root, "--store", url, "--replica-id", "b").start(60)
    try:
        with grpc.insecure_channel(a.address) as channel:  # the connection drops after 700 bytes
            with pytest.raises(grpc.RpcError):
                pb_grpc.TuningServiceStub(channel).UploadDataset(iter([
                    pb.UploadDatasetRequest(header=head),
                    pb.UploadDatasetRequest(chunk=dataset_pb2.UploadChunk(offset=0, data=data[:700]))]))
            assert pb_grpc.TuningServiceStub(channel).StartUpload(pb.StartUploadRequest(header=head)).offset == 700
        reported = []
        with tunewire.Client(b.address, timeout=30) as c:  # the resume reaches the other replica
            dataset = c.upload_dataset(path, upload_id="across-replicas", chunk_size=256,
                                       progress=lambda done, total: reported.append(done))
        assert dataset.sha256 == head.sha256 and dataset.report.num_rows == 32
        assert reported[0] == 0 and 256 in reported  # B held nothing: everything was sent again, from 0
        with tunewire.Client(a.address, timeout=30) as c:  # one catalog: A lists it too
            assert c.get_dataset(dataset.id).size_bytes == len(data)
    finally:
        a.stop(timeout=15)
        b.stop(timeout=15)
