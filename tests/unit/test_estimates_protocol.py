"""The estimate worker's messages survive their JSON line (estimates/protocol.py)."""

from __future__ import annotations

import pytest

from tunewire_server.estimates import protocol as p


def test_messages_round_trip():
    reply = p.EstimateReply(
        model=p.ModelFacts("llama", 32, 2, 4, 64, 420, 45_000, 1_000, gated_mlp=True),
        data=p.DataFacts(30, 0, 500, 3, 16, 14, 20, 23, 30, 15.5, peak_length=16),
        device=p.DeviceFacts("cpu", "cpu", 2**30), precision_bytes=4, mixed_precision=False,
        gradient_checkpointing=False, probe=p.ProbeFacts(4, 0.5, 1000, load_seconds=0.2, batch=8), notes=["x"])
    request = p.EstimateRequest(spec_json="{}", plan={"task": "sft"}, probe_steps=4, memory_limit_bytes=5)
    failure = p.EstimateFailure("bad", field="train_dataset", code="INVALID_DATA")
    for message in (reply, request, failure, p.EstimateReply(**{**reply.__dict__, "probe": None})):
        assert p.decode(p.encode(message)) == message


def test_anything_else_is_refused():
    with pytest.raises(ValueError):
        p.decode('{"kind": "Ready"}')
