"""The training worker boundary's messages (server/tunewire_server/protocol.py): one line each way."""

from __future__ import annotations

import json
import math

import pytest

from tunewire_server import protocol
from tunewire_server.protocol import (
    CheckpointSaved,
    ErrorMessage,
    EvalResult,
    JobError,
    JobRequest,
    ProtocolError,
    Ready,
    Result,
    TrainLog,
    decode,
    encode,
)

MESSAGES = [
    JobRequest("job-1", {"base_model": "tiny-bert", "max_retries": 2}, {"task": "classification", "lr": 1e-5},
               "/data/jobs/job-1", "/data/jobs/job-1/worker.log", "ab" * 32, nan_loss_steps=5, train_processes=2),
    Ready(time=1.5),
    TrainLog(3, 10, 0.3, 0.3, loss=0.7, learning_rate=1e-5, eta_seconds=4.0, extra={"aux": 1.0}, time=2.0),
    TrainLog(1, 1, 1.0, 1.0, time=2.5),  # nothing optional logged
    EvalResult(3, 0.3, {"loss": 0.25, "accuracy": 1.0}, time=3.0),
    CheckpointSaved(3, "checkpoint-3", time=4.0),
    Result({"loss": 0.25}, time=5.0),
    ErrorMessage(JobError("INVALID_DATA", "USER", "row 3 has no label", "train_dataset"), time=6.0),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip_on_one_line(message):
    line = encode(message)
    assert "\n" not in line
    assert decode(line) == message
    assert decode(line.encode()) == message  # as read from a pipe


def test_the_wire_shows_kind_time_and_the_fields_by_name():
    data = json.loads(encode(TrainLog(3, 10, 0.3, 0.3, loss=0.7, time=2.0)))
    assert data == {"kind": "train_log", "time": 2.0, "step": 3, "max_steps": 10, "epoch": 0.3, "progress": 0.3,
                    "loss": 0.7, "extra": {}}
    assert json.loads(encode(ErrorMessage(JobError.system("OUT_OF_MEMORY", "oom"), time=1.0))) == {
        "kind": "error", "time": 1.0,
        "error": {"code": "OUT_OF_MEMORY", "kind": "SYSTEM", "field": "", "message": "oom"}}
    assert "time" not in json.loads(encode(MESSAGES[0]))  # the request is not an event


def test_non_finite_numbers_travel_as_strings_and_come_back_as_floats():
    message = EvalResult(2, 0.5, {"loss": float("nan"), "up": float("inf"), "down": float("-inf"), "ok": 1.0})
    line = encode(message)
    assert json.loads(line)["metrics"] == {"loss": "nan", "up": "inf", "down": "-inf", "ok": 1.0}
    back = decode(line)
    assert math.isnan(back.metrics["loss"]) and back.metrics["up"] == math.inf and back.metrics["down"] == -math.inf
    log = decode(encode(TrainLog(1, 2, 0.5, 0.5, loss=float("nan"), extra={"x": float("inf")})))
    assert math.isnan(log.loss) and log.extra == {"x": math.inf}
    # what the store keeps as the event's payload shows the strings, as the wire does
    assert protocol.payload(back)["metrics"]["loss"] == "nan"


def test_a_string_field_that_reads_nan_stays_a_string():
    message = ErrorMessage(JobError("X", "USER", "nan", "inf"))
    assert decode(encode(message)) == message
    assert decode(encode(CheckpointSaved(1, "nan"))).name == "nan"


def test_a_torn_line_is_a_protocol_error():
    line = encode(MESSAGES[2])
    for torn in (line[: len(line) // 2], "", "[1, 2]", "{\"kind\": \"train_log\"}", "{\"kind\": \"error\"}"):
        with pytest.raises(ProtocolError):
            decode(torn)


def test_an_unknown_kind_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown message kind"):
        decode('{"kind": "telemetry", "time": 1.0}')
    with pytest.raises(ProtocolError):
        decode('{"step": 1}')  # no kind at all


def test_unknown_fields_of_a_known_kind_are_ignored():
    """A newer worker may send more: the control plane takes what it knows."""
    assert decode('{"kind":"checkpoint_saved","step":4,"name":"checkpoint-4","bytes":10}') == CheckpointSaved(
        4, "checkpoint-4")


def test_job_errors_are_stored_as_dicts_and_read_back():
    error = JobError("DISK_FULL", "SYSTEM", "the disk is full", "")
    assert error.to_dict() == {"code": "DISK_FULL", "kind": "SYSTEM", "field": "", "message": "the disk is full"}
    assert JobError.from_dict(error.to_dict()) == error
    assert JobError.system("INTERNAL", "x") == JobError("INTERNAL", "SYSTEM", "x", "")
