"""The thin servicer: protobuf in, a JobManager (or datasets, or models) call, protobuf out. Errors go through
status.to_status."""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from tunewire.v1 import job_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc
from tunewire_server.api import convert
from tunewire_server.api import datasets as datasets_api
from tunewire_server.api import models as models_api
from tunewire_server.api.status import to_status
from tunewire_server.datasets.catalog import Catalog
from tunewire_server.datasets.uploads import Uploads, UploadStream
from tunewire_server.errors import FieldViolation, InvalidSpec, ResourceExhausted, TunewireError
from tunewire_server.estimates.service import Estimator
from tunewire_server.jobs.manager import JobManager
from tunewire_server.models import removal
from tunewire_server.models.service import ModelService
from tunewire_server.observability import Metrics
from tunewire_server.validation.limits import check_job_id, check_page_token

log = structlog.get_logger("tunewire.api")


def _log_unexpected(method: str, exc: BaseException) -> None:
    if not isinstance(exc, TunewireError):
        log.exception("unhandled error", method=method, exc_info=exc)


class Malformed:
    """Stands in for a request whose bytes did not parse, so the client gets INVALID_ARGUMENT."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name, self.reason = type_name, reason

    def refuse(self) -> InvalidSpec:
        return InvalidSpec(FieldViolation("request", f"not a valid {self.type_name} message: {self.reason}"))


def _tolerant(message_cls):
    def deserialize(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError as exc:
            return Malformed(message_cls.DESCRIPTOR.full_name, str(exc) or "cannot be parsed")

    return deserialize


def tuning_handlers(servicer: TuningServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers, with request parsing that cannot fail the call with INTERNAL."""
    service = pb.DESCRIPTOR.services_by_name["TuningService"]
    handlers = {}
    for method in service.methods:
        kwargs = {
            "request_deserializer": _tolerant(getattr(pb, method.input_type.name)),
            "response_serializer": getattr(pb, method.output_type.name).SerializeToString,
        }
        if method.name == "StreamMetrics":  # yields bytes serialized once per event, shared by all streams
            kwargs["response_serializer"] = _passthrough(kwargs["response_serializer"])
        fn = getattr(servicer, method.name)
        if method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(fn, **kwargs)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _passthrough(serialize: Callable) -> Callable:
    def serializer(message) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return serializer


class _WireCache:
    """Each event serialized once however many clients stream it: as a StreamMetricsResponse of its own
    (field 1) and as one element of a batched response (field 2). Protobuf messages are concatenations
    of their fields, so a batch is the join of its elements' bytes."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], tuple[bytes, bytes]] = OrderedDict()

    def _get(self, event) -> tuple[bytes, bytes]:
        key = (event.job_id, event.seq)
        item = self._items.get(key)
        if item is None:
            data = convert.event_to_proto(event).SerializeToString()
            length = _varint(len(data))
            item = self._items[key] = (_EVENT_TAG + length + data, _EVENTS_TAG + length + data)
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return item

    def single(self, event) -> bytes:
        return self._get(event)[0]

    def batch(self, events) -> bytes:
        return b"".join([self._get(e)[1] for e in events])


_EVENT_TAG = bytes([1 << 3 | 2])  # StreamMetricsResponse.event: field 1, length-delimited
_EVENTS_TAG = bytes([2 << 3 | 2])  # StreamMetricsResponse.events: field 2, length-delimited
MAX_SEQ = 2**63 - 1
MAX_STREAM_BATCH = 1000  # events in one batched response at most, whatever the client asks


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def unary(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            if isinstance(request, Malformed):
                raise request.refuse()
            return await fn(self, request, context)
        except Exception as exc:
            _log_unexpected(fn.__name__, exc)
            await context.abort_with_status(to_status(exc))

    return wrapper


def streaming(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            if isinstance(request, Malformed):
                raise request.refuse()
            if self.open_streams >= self.max_streams:
                raise ResourceExhausted(f"this server allows {self.max_streams} open streams; try again later")
            self.open_streams += 1
            try:
                async for item in fn(self, request, context):
                    yield item
            finally:
                self.open_streams -= 1
        except Exception as exc:
            _log_unexpected(fn.__name__, exc)
            await context.abort_with_status(to_status(exc))

    return wrapper


def _require_job_id(job_id: str) -> str:
    """A job id that could name a job (validation.limits.check_job_id); anything else is INVALID_ARGUMENT
    here, so the job core never sees (nor quotes) an over-long or odd id."""
    return check_job_id(job_id)


def _message(request):
    """A streamed request message, or INVALID_ARGUMENT when its bytes did not parse."""
    if isinstance(request, Malformed):
        raise request.refuse()
    return request


class TuningServicer(pb_grpc.TuningServiceServicer):
    def __init__(self, manager: JobManager, max_streams: int = 1000, metrics: Metrics | None = None,
                 uploads: Uploads | None = None, catalog: Catalog | None = None,
                 models: ModelService | None = None) -> None:
        self.manager = manager
        self.models = models
        self.uploads = uploads
        self.catalog = catalog
        self.max_streams = max_streams
        self.open_streams = 0
        self._wire = _WireCache()
        self.metrics = metrics or Metrics()
        self.metrics.open_streams.set_function(lambda: self.open_streams)
        self._estimator: Estimator | None = None  # made on the first EstimateJob

    @unary
    async def SubmitJob(self, request: pb.SubmitJobRequest, context) -> pb.SubmitJobResponse:
        job = await self.manager.submit(request.spec, request.request_id)  # checks the request id first
        return pb.SubmitJobResponse(job=convert.job_to_proto(job))

    @unary
    async def EstimateJob(self, request: pb.EstimateJobRequest, context) -> pb.EstimateJobResponse:
        if self._estimator is None:
            self._estimator = Estimator(self.manager.settings, self.manager.store)
        estimate = await self._estimator.estimate(request.spec)
        return pb.EstimateJobResponse(estimate=convert.estimate_to_proto(estimate))

    @unary
    async def GetJob(self, request: pb.GetJobRequest, context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=convert.job_to_proto(self.manager.get(_require_job_id(request.job_id))))

    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        states = []
        for i, value in enumerate(request.states):
            if value not in job_pb2.JobState.values() or value == job_pb2.JOB_STATE_UNSPECIFIED:
                raise InvalidSpec(FieldViolation(f"states[{i}]", f"unknown state {value}"))
            states.append(convert.state_from_proto(value))
        check_page_token(request.page_token)
        jobs, token = self.manager.list(states, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=token)

    @unary
    async def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.CancelJobResponse:
        job = await self.manager.cancel(_require_job_id(request.job_id))
        return pb.CancelJobResponse(job=convert.job_to_proto(job))

    @unary
    async def PauseJob(self, request: pb.PauseJobRequest, context) -> pb.PauseJobResponse:
        job = await self.manager.pause(_require_job_id(request.job_id))
        return pb.PauseJobResponse(job=convert.job_to_proto(job))

    @unary
    async def ResumeJob(self, request: pb.ResumeJobRequest, context) -> pb.ResumeJobResponse:
        job = await self.manager.resume(_require_job_id(request.job_id))
        return pb.ResumeJobResponse(job=convert.job_to_proto(job))

    @streaming
    async def StreamMetrics(self, request: pb.StreamMetricsRequest, context):
        size = min(request.max_batch, MAX_STREAM_BATCH)
        # seqs are SQLite integers (at most 2^63-1): a larger after_seq asks for no past event either
        after_seq = min(request.after_seq, MAX_SEQ)
        async for batch in self.manager.event_batches(_require_job_id(request.job_id), after_seq):
            if size:
                for i in range(0, len(batch), size):
                    yield self._wire.batch(batch[i:i + size])
            else:
                for event in batch:
                    yield self._wire.single(event)
            self.metrics.events_streamed.inc(len(batch))

    @unary
    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        job_id = _require_job_id(request.job_id)  # before the inputs are converted
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        body.pop("job_id", None)
        with self.metrics.predict_latency.labels("Predict").time():
            predictions = await self.manager.predict(job_id, body)
        return pb.PredictResponse(predictions=[convert.prediction_to_proto(p) for p in predictions])

    @streaming
    async def PredictStream(self, request: pb.PredictStreamRequest, context):
        job_id = _require_job_id(request.job_id)  # before the inputs are converted
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        body.pop("job_id", None)
        async for message in self.manager.predict_stream(job_id, body):
            yield convert.stream_message_to_proto(message)

    # --- datasets -------------------------------------------------------------------------------

    @unary
    async def StartUpload(self, request: pb.StartUploadRequest, context) -> pb.StartUploadResponse:
        result = await self.uploads.start(datasets_api.header_from_proto(request.header, self.uploads))
        response = pb.StartUploadResponse(offset=result.offset)
        if result.dataset is not None:
            response.dataset.CopyFrom(datasets_api.dataset_to_proto(result.dataset))
        return response

    @unary
    async def UploadDataset(self, request_iterator, context) -> pb.UploadDatasetResponse:
        messages = aiter(request_iterator)
        first = _message(await anext(messages, None) or pb.UploadDatasetRequest())
        if first.WhichOneof("part") != "header":
            raise InvalidSpec(FieldViolation("header", "the stream's first message must carry the header"))
        if self.open_streams >= self.max_streams:  # uploads count among the open streams
            raise ResourceExhausted(f"this server allows {self.max_streams} open streams; try again later")
        self.open_streams += 1
        stream: UploadStream | None = None
        try:
            stream = await self.uploads.open(datasets_api.header_from_proto(first.header, self.uploads))
            async for request in messages:
                if _message(request).WhichOneof("part") != "chunk":
                    raise InvalidSpec(FieldViolation("chunk", "every message after the first must carry a chunk"))
                await stream.write(request.chunk.offset, request.chunk.data)
            record = await stream.finish()
        finally:
            self.open_streams -= 1
            if stream is not None:
                stream.release()  # a broken stream keeps the bytes held, for a resume
        return pb.UploadDatasetResponse(dataset=datasets_api.dataset_to_proto(record))

    @unary
    async def ListDatasets(self, request: pb.ListDatasetsRequest, context) -> pb.ListDatasetsResponse:
        check_page_token(request.page_token)
        records, token = self.catalog.list(request.page_size, request.page_token)
        return pb.ListDatasetsResponse(datasets=[datasets_api.dataset_to_proto(r) for r in records],
                                       next_page_token=token)

    @unary
    async def GetDataset(self, request: pb.GetDatasetRequest, context) -> pb.GetDatasetResponse:
        record = self.catalog.get(request.dataset_id)
        report = await self.catalog.report(record, request.label_column)
        return pb.GetDatasetResponse(dataset=datasets_api.dataset_to_proto(record, report))

    @unary
    async def DeleteDataset(self, request: pb.DeleteDatasetRequest, context) -> pb.DeleteDatasetResponse:
        return pb.DeleteDatasetResponse(deleted=await self.catalog.delete(request.dataset_id))

    # --- models out ---------------------------------------------------------------------------------

    @unary
    async def ListCheckpoints(self, request: pb.ListCheckpointsRequest, context) -> pb.ListCheckpointsResponse:
        job = self.manager.get(_require_job_id(request.job_id))
        return models_api.listing_to_proto(await asyncio.to_thread(self.models.list_checkpoints, job))

    @streaming
    async def DownloadModel(self, request: pb.DownloadModelRequest, context):
        job_id = _require_job_id(request.job_id)
        which, form = models_api.which_from_proto(request), models_api.form_from_proto(request.form)
        chunk_size = models_api.chunk_size(request.chunk_size)
        manifest = await self.models.manifest(self.manager.get(job_id), which, form)
        offsets = models_api.offsets_for(manifest, request.offsets)  # refused before anything is sent
        yield models_api.manifest_to_proto(manifest)
        async for chunk in self.models.stream(manifest, offsets, chunk_size):
            yield models_api.chunk_to_proto(chunk)

    @unary
    async def DeleteJob(self, request: pb.DeleteJobRequest, context) -> pb.DeleteJobResponse:
        deleted = await removal.delete_job(self.manager.store, self.models, _require_job_id(request.job_id))
        return pb.DeleteJobResponse(deleted=deleted)
