"""Predictions from the inference worker become protobuf without json_format, field for field the same."""

import pytest
from google.protobuf import json_format

from tunewire.v1 import tuning_service_pb2 as pb
from tunewire_server.api import convert


@pytest.mark.parametrize("prediction", [
    {"classification": {"label": "positive", "score": 0.75, "scores": [
        {"label": "positive", "score": 0.75}, {"label": "negative", "score": 0.2}, {"label": "neutral", "score": 0.05}]}},
    {"generation": {"text": "four five", "num_tokens": 3, "finish_reason": "eos"}},
    {"generation": {"text": "", "num_tokens": 0, "finish_reason": "cancelled"}},
])
def test_predictions_match_json_format(prediction):
    assert convert.prediction_to_proto(prediction) == json_format.ParseDict(prediction, pb.Prediction())


@pytest.mark.parametrize("message", [
    {"text_delta": "four"},
    {"final": {"text": "four five", "num_tokens": 2, "finish_reason": "stop"}},
])
def test_stream_messages_match_json_format(message):
    assert convert.stream_message_to_proto(message) == json_format.ParseDict(message, pb.PredictStreamResponse())
