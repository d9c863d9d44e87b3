"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence

import grpc

from tunewire import _requests as req
from tunewire.errors import JobFailedError, from_rpc_error
from tunewire.types import Job, JobEvent, JobState, Prediction, StateChange, prediction_from_proto
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc


class Client:
    """A connection to a tunewire server.

    >>> with tunewire.Client("localhost:50051") as client:
    ...     job = client.submit("job.yaml")
    ...     for event in client.stream_metrics(job.id):
    ...         print(event)
    ...     client.predict(job.id, ["a review"])

    Every unary call has a deadline (`timeout` seconds, per client or per call). Failures raise
    `tunewire.TunewireError` subclasses, never raw gRPC errors. While a call is open the channel sends
    a keepalive ping every `keepalive_s` seconds; keep it at the server's keepalive_s (default 30 s, both
    sides), since a server cuts off a client that pings much faster than it accepts.
    """

    def __init__(self, address: str = "localhost:50051", *, timeout: float = req.DEFAULT_TIMEOUT,
                 token: str | None = None, credentials: grpc.ChannelCredentials | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024,
                 keepalive_s: float = req.DEFAULT_KEEPALIVE_S) -> None:
        options = req.channel_options(max_message_bytes, keepalive_s)
        self._channel = (grpc.secure_channel(address, credentials, options) if credentials
                         else grpc.insecure_channel(address, options))
        self._stub = pb_grpc.TuningServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = req.metadata(token)
        self.address = address

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def submit(self, spec: req.SpecLike, *, request_id: str = "", timeout: float | None = None) -> Job:
        """Queue a job. `spec` is a JobSpec, a mapping, or a path to a YAML/JSON spec file.

        With `request_id`, submitting again returns the same job instead of a new one.
        """
        response = self._call(self._stub.SubmitJob, pb.SubmitJobRequest(spec=req.as_spec(spec), request_id=request_id),
                              timeout)
        return Job.from_proto(response.job)

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return Job.from_proto(self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id), timeout).job)

    def list_jobs(self, states: Iterable[JobState | str] | None = None, *, page_size: int = 50,
                  limit: int | None = None, timeout: float | None = None) -> Iterator[Job]:
        """Jobs, newest first, fetching pages as needed."""
        token, seen = "", 0
        while True:
            page = self._call(self._stub.ListJobs, req.list_request(states, page_size, token), timeout)
            for job in page.jobs:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Job.from_proto(job)
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        return Job.from_proto(self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id), timeout).job)

    def stream_metrics(self, job_id: str, *, after_seq: int = 0, reconnect: bool = True) -> Iterator[JobEvent]:
        """Events with seq > after_seq, then live ones, until the job ends.

        If the connection drops, the stream reconnects after the last seq it delivered, so no event
        is lost or repeated.
        """
        last = after_seq
        failures = 0
        while True:
            call = self._stub.StreamMetrics(req.stream_request(job_id, last), metadata=self._metadata)
            try:
                for response in call:
                    for message in req.response_events(response):
                        event = JobEvent.from_proto(message)
                        last = event.seq
                        failures = 0
                        yield event
                return
            except grpc.RpcError as exc:
                if not reconnect or exc.code() not in req.RETRYABLE or failures >= len(req.RECONNECT_DELAYS):
                    raise from_rpc_error(exc) from None
                time.sleep(req.RECONNECT_DELAYS[failures])
                failures += 1
            finally:
                call.cancel()

    def wait(self, job_id: str, *, raise_on_failure: bool = True) -> Job:
        """Block until the job is terminal; raise JobFailedError unless it SUCCEEDED."""
        for event in self.stream_metrics(job_id):
            if isinstance(event.data, StateChange) and event.data.state.terminal:
                break
        job = self.get(job_id)
        if raise_on_failure and job.state != JobState.SUCCEEDED:
            raise JobFailedError(job)
        return job

    def predict(self, job_id: str, inputs: Sequence[str | Sequence[req.Message]] | str, *,
                generation: pb.GenerationParams | None = None, timeout: float | None = None,
                **generation_kwargs) -> list[Prediction]:
        """Run a succeeded job's model: one Classification or Generation per input, in order.

        Inputs are strings, or (SFT jobs) conversations as lists of {"role", "content"} dicts.
        Generation settings: `max_new_tokens`, `temperature`, `top_p`, `top_k`, `do_sample`, `stop`,
        `seed` as keyword arguments, or a prepared `generation` message.
        """
        if generation is None and generation_kwargs:
            generation = req.generation_params(**generation_kwargs)
        response = self._call(self._stub.Predict, req.predict_request(job_id, inputs, generation), timeout)
        return [prediction_from_proto(p) for p in response.predictions]

    def predict_stream(self, job_id: str, prompt: str | Sequence[req.Message], **generation_kwargs) -> Iterator[str]:
        """Yield generated text as it is produced (SFT jobs). Closing the iterator stops generation."""
        request = pb.PredictStreamRequest(job_id=job_id, generation=req.generation_params(**generation_kwargs))
        if isinstance(prompt, str):
            request.text = prompt
        else:
            request.conversation.CopyFrom(req.conversation(prompt))
        call = self._stub.PredictStream(request, metadata=self._metadata)
        try:
            for response in call:
                if response.text_delta:
                    yield response.text_delta
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def health(self, *, timeout: float = 5.0) -> bool:
        """True when the server's grpc.health.v1 service reports the job service SERVING."""
        check = self._channel.unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=None, response_deserializer=None)
        try:
            answer = check(req.HEALTH_CHECK_REQUEST, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError:
            return False
        return answer == req.HEALTH_SERVING
