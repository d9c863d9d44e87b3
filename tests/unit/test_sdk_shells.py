"""Client and AsyncClient, the thin shells around tunewire._core, over real gRPC against a small scripted
TuningService on 127.0.0.1:0 (no tunewire server): both reconnect after the last delivered seq, follow
pages, put a deadline on every unary call, wait for the end, and raise rich errors the same way."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import tunewire
from tunewire.v1 import dataset_pb2, job_pb2, model_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

LAST_SEQ = 6
DROP_AFTER = 3  # the first stream breaks (UNAVAILABLE) after this seq


class ScriptedService(pb_grpc.TuningServiceServicer):
    """Six events, the first stream cut after seq 3; three pages of jobs; every request recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stream_after: list[int] = []
        self.page_tokens: list[str] = []
        self.deadlines: list[float | None] = []

    def _unary(self, context) -> None:
        with self.lock:
            self.deadlines.append(context.time_remaining())

    def StreamMetrics(self, request, context):
        with self.lock:
            self.stream_after.append(request.after_seq)
            first = len(self.stream_after) == 1
        for seq in range(request.after_seq + 1, LAST_SEQ + 1):
            if first and seq > DROP_AFTER:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost")
            msg = job_pb2.JobEvent(job_id=request.job_id, seq=seq)
            msg.time.FromSeconds(seq)
            if seq == LAST_SEQ:
                msg.state_change.state = job_pb2.JOB_STATE_FAILED
            else:
                msg.train_log.step = seq
            yield pb.StreamMetricsResponse(events=[msg]) if seq % 2 else pb.StreamMetricsResponse(event=msg)

    def ListJobs(self, request, context):
        self._unary(context)
        with self.lock:
            self.page_tokens.append(request.page_token)
        number = int(request.page_token or "0")
        jobs = [job_pb2.Job(id=f"job-{number * 2 + i}", state=job_pb2.JOB_STATE_QUEUED) for i in range(2)]
        return pb.ListJobsResponse(jobs=jobs, next_page_token=str(number + 1) if number < 2 else "")

    def GetJob(self, request, context):
        self._unary(context)
        error = job_pb2.JobError(code="OOM", message="out of memory")
        return pb.GetJobResponse(job=job_pb2.Job(id=request.job_id, state=job_pb2.JOB_STATE_FAILED, error=error))

    def SubmitJob(self, request, context):
        self._unary(context)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="base_model", description="is required")]))
        context.abort_with_status(rpc_status.to_status(status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="invalid job spec", details=[detail])))


@pytest.fixture
def scripted():
    service = ScriptedService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TuningServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def check(service: ScriptedService, seqs: list[int], jobs: list[str], limited: list[str],
          error: tunewire.TunewireError, waited: tunewire.JobFailedError) -> None:
    assert seqs == list(range(1, LAST_SEQ + 1))  # nothing lost or repeated across the reconnect
    assert service.stream_after[:2] == [0, DROP_AFTER]  # it resumed after the last delivered seq
    assert jobs == [f"job-{i}" for i in range(6)] and limited == ["job-0", "job-1", "job-2"]
    assert service.page_tokens == ["", "1", "2", "", "1"]  # the limit of 3 needs two pages, not three
    assert isinstance(error, tunewire.InvalidArgumentError)
    assert error.violations == (tunewire.FieldViolation("base_model", "is required"),)
    assert waited.job.state == tunewire.JobState.FAILED and "OOM" in str(waited)
    # every unary call carries the client's deadline (20 s; the default would be 60, none at all None)
    assert len(service.deadlines) == 7 and all(d is not None and 0 < d < 30 for d in service.deadlines)


def test_the_sync_client(scripted):
    service, address = scripted
    with tunewire.Client(address, timeout=20) as client:
        seqs = [e.seq for e in client.stream_metrics("job-1")]
        jobs = [j.id for j in client.list_jobs(page_size=2)]
        limited = [j.id for j in client.list_jobs(page_size=2, limit=3)]
        with pytest.raises(tunewire.TunewireError) as error:
            client.submit({"base_model": "m"})
        with pytest.raises(tunewire.JobFailedError) as waited:
            client.wait("job-1")
    check(service, seqs, jobs, limited, error.value, waited.value)


def test_the_asyncio_client(scripted):
    service, address = scripted

    async def main():
        async with tunewire.AsyncClient(address, timeout=20) as client:
            seqs = [e.seq async for e in client.stream_metrics("job-1")]
            jobs = [j.id async for j in client.list_jobs(page_size=2)]
            limited = [j.id async for j in client.list_jobs(page_size=2, limit=3)]
            with pytest.raises(tunewire.TunewireError) as error:
                await client.submit({"base_model": "m"})
            with pytest.raises(tunewire.JobFailedError) as waited:
                await client.wait("job-1")
        return seqs, jobs, limited, error.value, waited.value

    check(service, *asyncio.run(main()))


# --- uploads ---------------------------------------------------------------------------------------------

CUT_AT = 3000  # the first UploadDataset stream breaks (UNAVAILABLE) once the server holds this many bytes


class ScriptedUploads(pb_grpc.TuningServiceServicer):
    """Holds the bytes it is sent; its first upload stream is cut at CUT_AT; one dataset to get, list, delete."""

    def __init__(self) -> None:
        self.held = bytearray()
        self.starts: list[int] = []  # the offset each StartUpload answered
        self.first_offsets: list[int] = []  # the offset of each stream's first chunk

    def StartUpload(self, request, context):
        self.starts.append(len(self.held))
        return pb.StartUploadResponse(offset=len(self.held))

    def UploadDataset(self, request_iterator, context):
        first_stream = not self.first_offsets
        head = next(request_iterator).header
        for i, request in enumerate(request_iterator):
            if i == 0:
                self.first_offsets.append(request.chunk.offset)
            assert request.chunk.offset == len(self.held)
            self.held += request.chunk.data
            if first_stream and len(self.held) >= CUT_AT:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the link dropped")
        return pb.UploadDatasetResponse(dataset=self._dataset(head.name, hashlib.sha256(self.held).hexdigest()))

    @staticmethod
    def _dataset(name: str = "d.jsonl", sha: str = "0" * 64) -> dataset_pb2.UploadedDataset:
        return dataset_pb2.UploadedDataset(id="ds-" + sha, name=name, format=job_pb2.FILE_FORMAT_JSONL, sha256=sha)

    def GetDataset(self, request, context):
        return pb.GetDatasetResponse(dataset=self._dataset())

    def ListDatasets(self, request, context):
        return pb.ListDatasetsResponse(datasets=[self._dataset()])

    def DeleteDataset(self, request, context):
        return pb.DeleteDatasetResponse(deleted=True)


@pytest.fixture
def uploads(tmp_path):
    service = ScriptedUploads()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TuningServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a row"}\n' * 500)
    try:
        yield service, f"127.0.0.1:{port}", path
    finally:
        server.stop(None)


def check_upload(service: ScriptedUploads, path, dataset, seen, rest) -> None:
    data = path.read_bytes()
    assert bytes(service.held) == data and dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert service.starts == [0, CUT_AT] and service.first_offsets == [0, CUT_AT]  # only the rest went again
    assert seen[-1] == (len(data), len(data)) and (CUT_AT, len(data)) in seen
    assert [d.id for d in rest[0]] == [rest[1].id] and rest[2] is True


def test_the_sync_client_resumes_an_upload_by_itself(uploads):
    service, address, path = uploads
    seen = []
    with tunewire.Client(address, timeout=20) as client:
        dataset = client.upload_dataset(path, progress=lambda *p: seen.append(p), chunk_size=500)
        rest = (list(client.list_datasets()), client.get_dataset("ds-x"), client.delete_dataset("ds-x"))
    check_upload(service, path, dataset, seen, rest)


def test_the_asyncio_client_resumes_an_upload_by_itself(uploads):
    service, address, path = uploads
    seen = []

    async def main():
        async with tunewire.AsyncClient(address, timeout=20) as client:
            dataset = await client.upload_dataset(path, progress=lambda *p: seen.append(p), chunk_size=500)
            rest = ([d async for d in client.list_datasets()], await client.get_dataset("ds-x"),
                    await client.delete_dataset("ds-x"))
        return dataset, rest

    dataset, rest = asyncio.run(main())
    check_upload(service, path, dataset, seen, rest)


class Stop(Exception):
    """What a user's progress callback raises."""


def stop_at(limit: int):
    def progress(done: int, total: int) -> None:
        if done >= limit:
            raise Stop(f"stopped at {done}")
    return progress


def test_a_progress_callback_that_raises_stops_the_sync_upload_with_its_exception(uploads):
    service, address, path = uploads
    with tunewire.Client(address, timeout=20) as client, pytest.raises(Stop, match="stopped at 1000"):
        client.upload_dataset(path, progress=stop_at(1000), chunk_size=500)
    assert service.starts == [0] and len(service.held) <= 1500  # not retried; the stream ended there


def test_a_progress_callback_that_raises_stops_the_asyncio_upload_with_its_exception(uploads):
    service, address, path = uploads

    async def main():
        async with tunewire.AsyncClient(address, timeout=20) as client:
            await client.upload_dataset(path, progress=stop_at(1000), chunk_size=500)

    with pytest.raises(Stop, match="stopped at 1000"):
        asyncio.run(main())
    assert service.starts == [0] and len(service.held) <= 1500


FILES = {"config.json": b'{"model_type": "bert"}' * 40, "model.safetensors": bytes(range(256)) * 64,
         "empty.txt": b""}
DOWNLOAD_CUT = 5000  # the first download stream breaks (UNAVAILABLE) once this many bytes were sent


class ScriptedDownloads(pb_grpc.TuningServiceServicer):
    """Three files sent in 1000-byte chunks; the first stream is cut after DOWNLOAD_CUT bytes; job "corrupt"
    sends bytes that do not hash to its manifest's sha256. Every request's offsets are recorded."""

    def __init__(self) -> None:
        self.offsets: list[dict[str, int]] = []
        self.deleted: list[str] = []

    def DownloadModel(self, request, context):
        self.offsets.append(dict(request.offsets))
        first = len(self.offsets) == 1
        files = [model_pb2.ModelFile(path=p, size_bytes=len(d), sha256=hashlib.sha256(d).hexdigest())
                 for p, d in FILES.items()]
        yield pb.DownloadModelResponse(manifest=model_pb2.DownloadManifest(
            job_id=request.job_id, files=files, total_bytes=sum(len(d) for d in FILES.values()), step=4,
            form=model_pb2.MODEL_FORM_AS_TRAINED))
        sent = 0
        for path, data in FILES.items():
            if request.job_id == "corrupt" and path == "model.safetensors":
                data = data[:-1] + b"!"
            offset = request.offsets.get(path, 0)
            while True:
                piece = data[offset:offset + 1000]
                if first and sent >= DOWNLOAD_CUT:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the link dropped")
                yield pb.DownloadModelResponse(chunk=model_pb2.ModelChunk(
                    path=path, offset=offset, data=piece, last=offset + len(piece) >= len(data)))
                offset += len(piece)
                sent += len(piece)
                if offset >= len(data):
                    break

    def ListCheckpoints(self, request, context):
        checkpoint = model_pb2.Checkpoint(step=2, epoch=0.5, size_bytes=10, download_bytes=5,
                                          eval_metrics={"accuracy": 0.75})
        return pb.ListCheckpointsResponse(checkpoints=[checkpoint], final_model=model_pb2.FinalModel(step=4))

    def DeleteJob(self, request, context):
        first = request.job_id not in self.deleted
        self.deleted.append(request.job_id)
        return pb.DeleteJobResponse(deleted=first)


@pytest.fixture
def downloads():
    service = ScriptedDownloads()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TuningServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def check_download(service: ScriptedDownloads, dest, result, seen, listing, deleted, corrupt) -> None:
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == FILES  # every file whole, no partial left
    total = sum(len(d) for d in FILES.values())
    assert result.reconnects == 1 and result.received_bytes == total  # nothing was sent twice
    assert len(service.offsets) == 3 and service.offsets[0] == {}
    # resumed from the bytes held: config.json whole (880 bytes), then 5 chunks of the weights before the cut
    assert service.offsets[1] == {"config.json": len(FILES["config.json"]), "model.safetensors": 5000}
    assert seen[-1] == (total, total)
    assert [c.step for c in listing.checkpoints] == [2] and listing.checkpoints[0].eval_metrics == {"accuracy": 0.75}
    assert listing.final.step == 4 and deleted == [True, False]
    assert isinstance(corrupt, tunewire.IntegrityError) and "model.safetensors" in str(corrupt)


def test_the_sync_client_downloads_resumes_and_checks_every_sha256(downloads, tmp_path):
    service, address = downloads
    seen = []
    with tunewire.Client(address, timeout=20) as client:
        result = client.download("job-1", tmp_path / "model", progress=lambda *p: seen.append(p))
        listing = client.list_checkpoints("job-1")
        deleted = [client.delete_job("job-1"), client.delete_job("job-1")]
        with pytest.raises(tunewire.IntegrityError) as corrupt:
            client.download("corrupt", tmp_path / "corrupt")
    check_download(service, tmp_path / "model", result, seen, listing, deleted, corrupt.value)
    assert not (tmp_path / "corrupt" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == ["config.json"]  # stopped at the bad file


def test_the_asyncio_client_downloads_resumes_and_checks_every_sha256(downloads, tmp_path):
    service, address = downloads
    seen = []

    async def main():
        async with tunewire.AsyncClient(address, timeout=20) as client:
            result = await client.download("job-1", tmp_path / "model", progress=lambda *p: seen.append(p))
            listing = await client.list_checkpoints("job-1")
            deleted = [await client.delete_job("job-1"), await client.delete_job("job-1")]
            try:
                await client.download("corrupt", tmp_path / "corrupt")
            except tunewire.IntegrityError as exc:
                return result, listing, deleted, exc
            raise AssertionError("a corrupt file was accepted")

    result, listing, deleted, corrupt = asyncio.run(main())
    check_download(service, tmp_path / "model", result, seen, listing, deleted, corrupt)
