"""The asyncio client: the same calls as `tunewire.Client`, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from tunewire import _requests as req
from tunewire.errors import JobFailedError, from_rpc_error
from tunewire.types import Job, JobEvent, JobState, Prediction, StateChange, prediction_from_proto
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc


class AsyncClient:
    """>>> async with tunewire.AsyncClient("localhost:50051") as client:
    ...     job = await client.submit(spec)
    ...     async for event in client.stream_metrics(job.id):
    ...         ...

    `keepalive_s`: seconds between keepalive pings while a call is open; keep it at the server's.
    """

    def __init__(self, address: str = "localhost:50051", *, timeout: float = req.DEFAULT_TIMEOUT,
                 token: str | None = None, credentials: grpc.ChannelCredentials | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024,
                 keepalive_s: float = req.DEFAULT_KEEPALIVE_S) -> None:
        options = req.channel_options(max_message_bytes, keepalive_s)
        self._channel = (grpc.aio.secure_channel(address, credentials, options) if credentials
                         else grpc.aio.insecure_channel(address, options))
        self._stub = pb_grpc.TuningServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = req.metadata(token)
        self.address = address

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def submit(self, spec: req.SpecLike, *, request_id: str = "", timeout: float | None = None) -> Job:
        response = await self._call(self._stub.SubmitJob,
                                    pb.SubmitJobRequest(spec=req.as_spec(spec), request_id=request_id), timeout)
        return Job.from_proto(response.job)

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return Job.from_proto((await self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id), timeout)).job)

    async def list_jobs(self, states: Iterable[JobState | str] | None = None, *, page_size: int = 50,
                        limit: int | None = None, timeout: float | None = None) -> AsyncIterator[Job]:
        token, seen = "", 0
        while True:
            page = await self._call(self._stub.ListJobs, req.list_request(states, page_size, token), timeout)
            for job in page.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Job.from_proto(job)
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        response = await self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id), timeout)
        return Job.from_proto(response.job)

    async def stream_metrics(self, job_id: str, *, after_seq: int = 0,
                             reconnect: bool = True) -> AsyncIterator[JobEvent]:
        """Events with seq > after_seq, then live ones, until the job ends; reconnects without loss."""
        last = after_seq
        failures = 0
        while True:
            call = self._stub.StreamMetrics(req.stream_request(job_id, last), metadata=self._metadata)
            try:
                async for response in call:
                    for message in req.response_events(response):
                        event = JobEvent.from_proto(message)
                        last = event.seq
                        failures = 0
                        yield event
                return
            except grpc.RpcError as exc:
                if not reconnect or exc.code() not in req.RETRYABLE or failures >= len(req.RECONNECT_DELAYS):
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(req.RECONNECT_DELAYS[failures])
                failures += 1
            finally:
                call.cancel()

    async def wait(self, job_id: str, *, raise_on_failure: bool = True) -> Job:
        async for event in self.stream_metrics(job_id):
            if isinstance(event.data, StateChange) and event.data.state.terminal:
                break
        job = await self.get(job_id)
        if raise_on_failure and job.state != JobState.SUCCEEDED:
            raise JobFailedError(job)
        return job

    async def predict(self, job_id: str, inputs: Sequence[str | Sequence[req.Message]] | str, *,
                      generation: pb.GenerationParams | None = None, timeout: float | None = None,
                      **generation_kwargs) -> list[Prediction]:
        if generation is None and generation_kwargs:
            generation = req.generation_params(**generation_kwargs)
        response = await self._call(self._stub.Predict, req.predict_request(job_id, inputs, generation), timeout)
        return [prediction_from_proto(p) for p in response.predictions]

    async def predict_stream(self, job_id: str, prompt: str | Sequence[req.Message],
                             **generation_kwargs) -> AsyncIterator[str]:
        request = pb.PredictStreamRequest(job_id=job_id, generation=req.generation_params(**generation_kwargs))
        if isinstance(prompt, str):
            request.text = prompt
        else:
            request.conversation.CopyFrom(req.conversation(prompt))
        call = self._stub.PredictStream(request, metadata=self._metadata)
        try:
            async for response in call:
                if response.text_delta:
                    yield response.text_delta
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def health(self, *, timeout: float = 5.0) -> bool:
        check = self._channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            answer = await check(req.HEALTH_CHECK_REQUEST, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError:
            return False
        return answer == req.HEALTH_SERVING
