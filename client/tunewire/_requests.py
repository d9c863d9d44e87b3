"""Request building shared by the sync and asyncio clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from tunewire.spec import load_spec
from tunewire.types import JobState
from tunewire.v1 import job_pb2
from tunewire.v1 import tuning_service_pb2 as pb

DEFAULT_TIMEOUT = 60.0
# Waiting between stream reconnects; the stream resumes after the last seq it delivered.
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)

# grpc.health.v1 on the wire, so the light SDK needs no grpcio-health-checking:
# HealthCheckRequest{service: "tunewire.v1.TuningService"} and HealthCheckResponse{status: SERVING}.
_SERVICE = b"tunewire.v1.TuningService"
HEALTH_CHECK_REQUEST = b"\x0a" + bytes([len(_SERVICE)]) + _SERVICE
HEALTH_SERVING = b"\x08\x01"

SpecLike = job_pb2.JobSpec | Mapping[str, Any] | str | Path
Message = Mapping[str, str]  # {"role": ..., "content": ...}


def as_spec(spec: SpecLike) -> job_pb2.JobSpec:
    return spec if isinstance(spec, job_pb2.JobSpec) else load_spec(spec)


DEFAULT_KEEPALIVE_S = 30.0  # the server's keepalive_s default: its ping policy accepts pings this often


def channel_options(max_message_bytes: int, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> list[tuple[str, int]]:
    """Channel arguments. While a call is open (a quiet StreamMetrics included) the channel pings every
    `keepalive_s`, so a dead connection is noticed; the server accepts pings at its own keepalive_s, and
    the two must agree (a client pinging faster than the server's keepalive_s / 2 is cut off with GOAWAY
    too_many_pings). grpc core would stop after two pings without data; max_pings_without_data 0 keeps
    the pings going on a quiet stream."""
    if not keepalive_s > 0:
        raise ValueError(f"keepalive_s must be above 0, got {keepalive_s}")
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


STREAM_BATCH = 256  # events the server may send in one StreamMetrics response


def stream_request(job_id: str, after_seq: int) -> pb.StreamMetricsRequest:
    return pb.StreamMetricsRequest(job_id=job_id, after_seq=after_seq, max_batch=STREAM_BATCH)


def response_events(response: pb.StreamMetricsResponse):
    """The events one StreamMetrics response carries: several when batched, else its one event."""
    if response.events:
        return response.events
    return (response.event,) if response.HasField("event") else ()


def list_request(states: Iterable[JobState | str] | None, page_size: int, page_token: str) -> pb.ListJobsRequest:
    return pb.ListJobsRequest(states=[JobState(s).to_proto() for s in states or ()], page_size=page_size,
                              page_token=page_token)


def generation_params(max_new_tokens: int | None = None, temperature: float | None = None,
                      top_p: float | None = None, top_k: int | None = None, do_sample: bool = False,
                      stop: Sequence[str] = (), seed: int | None = None) -> pb.GenerationParams:
    params = pb.GenerationParams(do_sample=do_sample, stop_sequences=list(stop))
    for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature), ("top_p", top_p),
                        ("top_k", top_k), ("seed", seed)):
        if value is not None:
            setattr(params, name, value)
    return params


def predict_request(job_id: str, inputs: Sequence[str | Sequence[Message]],
                    generation: pb.GenerationParams | None) -> pb.PredictRequest:
    """Plain strings become `inputs`; lists of {role, content} messages become `conversations`."""
    request = pb.PredictRequest(job_id=job_id, generation=generation)
    if isinstance(inputs, str):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, str):
            request.inputs.append(item)
        else:
            request.conversations.append(conversation(item))
    return request


def conversation(messages: Sequence[Message]) -> pb.Conversation:
    return pb.Conversation(messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages])
