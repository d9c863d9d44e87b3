"""The thin servicer: protobuf in, a JobManager call, protobuf out. Errors go through status.to_status."""

from __future__ import annotations

import functools
from collections.abc import Callable

import grpc
import structlog
from google.protobuf import json_format

from tunewire.v1 import job_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc
from tunewire_server.api import convert
from tunewire_server.api.status import to_status
from tunewire_server.errors import FieldViolation, InvalidSpec, TunewireError
from tunewire_server.manager import JobManager

log = structlog.get_logger("tunewire.api")


def _log_unexpected(method: str, exc: BaseException) -> None:
    if not isinstance(exc, TunewireError):
        log.exception("unhandled error", method=method, exc_info=exc)


def unary(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await fn(self, request, context)
        except Exception as exc:
            _log_unexpected(fn.__name__, exc)
            await context.abort_with_status(to_status(exc))

    return wrapper


def streaming(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            async for item in fn(self, request, context):
                yield item
        except Exception as exc:
            _log_unexpected(fn.__name__, exc)
            await context.abort_with_status(to_status(exc))

    return wrapper


def _require_job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidSpec(FieldViolation("job_id", "is required"))
    return job_id


class TuningServicer(pb_grpc.TuningServiceServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    @unary
    async def SubmitJob(self, request: pb.SubmitJobRequest, context) -> pb.SubmitJobResponse:
        job = await self.manager.submit(request.spec, request.request_id)
        return pb.SubmitJobResponse(job=convert.job_to_proto(job))

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
        jobs, token = self.manager.list(states, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=token)

    @unary
    async def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.CancelJobResponse:
        job = await self.manager.cancel(_require_job_id(request.job_id))
        return pb.CancelJobResponse(job=convert.job_to_proto(job))

    @streaming
    async def StreamMetrics(self, request: pb.StreamMetricsRequest, context):
        async for event in self.manager.events(_require_job_id(request.job_id), request.after_seq):
            yield pb.StreamMetricsResponse(event=convert.event_to_proto(event))

    @unary
    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        body.pop("job_id", None)
        predictions = await self.manager.predict(_require_job_id(request.job_id), body)
        return pb.PredictResponse(predictions=[json_format.ParseDict(p, pb.Prediction()) for p in predictions])

    @streaming
    async def PredictStream(self, request: pb.PredictStreamRequest, context):
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        body.pop("job_id", None)
        async for message in self.manager.predict_stream(_require_job_id(request.job_id), body):
            yield json_format.ParseDict(message, pb.PredictStreamResponse())
