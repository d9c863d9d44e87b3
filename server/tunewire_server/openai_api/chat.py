"""/v1/chat/completions and /v1/completions with a fine-tuned model, through the same JobManager.predict /
predict_stream (the inference worker, its model cache and micro-batching) as gRPC Predict and PredictStream.
`stream: true` answers with server-sent events in OpenAI's chunk shape, ending with `data: [DONE]`.

Sampling follows OpenAI: temperature defaults to 1 (sampling); temperature 0 (or below the worker's
smallest, 0.01) is greedy decoding, where top_p does not apply."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tunewire_server.errors import FieldViolation, InvalidSpec, TunewireError
from tunewire_server.openai_api.errors import FastJSONResponse
from tunewire_server.openai_api.errors import body as error_body
from tunewire_server.openai_api.fine_tuning import json_object
from tunewire_server.openai_api.models import job_of_model
from tunewire_server.validation.generation import MIN_TEMPERATURE

router = APIRouter()
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
DEFAULT_TEMPERATURE = 1.0


def _number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSpec(FieldViolation(name, f"must be a number, got {value!r}"))
    return float(value)


def generation(body: dict) -> dict:
    """GenerationParams (as the Predict request's JSON) from OpenAI's sampling parameters."""
    n = body.get("n")
    if n not in (None, 1):
        raise InvalidSpec(FieldViolation("n", "only n=1 is supported"))
    if body.get("logprobs") not in (None, False, 0):
        raise InvalidSpec(FieldViolation("logprobs", "is not supported"))
    gen: dict = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise InvalidSpec(FieldViolation("max_tokens", f"must be an integer, got {max_tokens!r}"))
        gen["max_new_tokens"] = max_tokens
    temperature = _number(body, "temperature")
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    if temperature < 0:
        raise InvalidSpec(FieldViolation("temperature", "must be at least 0"))
    if temperature >= MIN_TEMPERATURE:
        gen["do_sample"] = True
        gen["temperature"] = temperature
        top_p = _number(body, "top_p")
        if top_p is not None:
            gen["top_p"] = top_p
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidSpec(FieldViolation("stop", "must be a string or a list of strings"))
        gen["stop_sequences"] = [s for s in stops if s]
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidSpec(FieldViolation("seed", f"must be an integer, got {seed!r}"))
        gen["seed"] = seed
    return gen


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidSpec(FieldViolation(f"messages[{i}].content", "only text content parts are supported"))
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise InvalidSpec(FieldViolation(f"messages[{i}].content", "must be a string or a list of text parts"))


def conversation(body: dict) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidSpec(FieldViolation("messages", "must be a non-empty list of {role, content}"))
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidSpec(FieldViolation(f"messages[{i}]", "must be an object with role and content"))
        role = "system" if m.get("role") == "developer" else m.get("role")
        out.append({"role": role, "content": _content(m, i)})
    return {"messages": out}


def prompt_of(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidSpec(FieldViolation("prompt", "must be a non-empty string (one prompt per request)"))
    return prompt


def usage(final: dict) -> dict:
    prompt, completion = int(final.get("prompt_tokens") or 0), int(final.get("num_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _generated(predictions: list[dict]) -> dict:
    if not predictions or "generation" not in predictions[0]:
        raise InvalidSpec(FieldViolation("model", "is a classification model; completions need an SFT job's model"))
    return predictions[0]["generation"]


def _sse(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _events(messages: AsyncIterator[dict], first: dict, chunk, closing, include_usage: bool):
    """SSE bytes: a chunk per text delta, the finish chunk, the usage chunk if asked for, then [DONE].
    An error after the stream started is sent as an error event (the status line has gone already)."""
    try:
        opening = chunk(None, None, True)
        if opening is not None:
            yield _sse(opening)
        message = first
        while True:
            if "final" in message:
                final = message["final"]
                yield _sse(closing(FINISH.get(final.get("finish_reason"), "stop")))
                if include_usage:
                    yield _sse({**closing(None), "choices": [], "usage": usage(final)})
                break
            if message.get("text_delta"):
                yield _sse(chunk(message["text_delta"], None, False))
            message = await anext(messages)
        yield b"data: [DONE]\n\n"
    except TunewireError as exc:
        yield _sse(error_body(exc.message, "server_error", "stream_error"))
    finally:
        await messages.aclose()


async def _stream(face, job_id: str, request: dict, body: dict, chunk, closing) -> StreamingResponse:
    messages = face.manager.predict_stream(job_id, request)
    try:
        first = await anext(messages)  # errors before the first byte keep their HTTP status
    except BaseException:
        await messages.aclose()
        raise
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return StreamingResponse(_events(messages, first, chunk, closing, include_usage),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    face = request.app.state.face
    body = await json_object(request)
    model = body.get("model")
    job_id = job_of_model(model)
    gen, convo = generation(body), conversation(body)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "created": created, "model": model}
    if body.get("stream"):
        def chunk(text, finish, opening):
            delta = {"role": "assistant", "content": ""} if opening else {"content": text}
            return {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        def closing(finish):
            return {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}]}

        return await _stream(face, job_id, {"conversation": convo, "generation": gen}, body, chunk, closing)
    result = _generated(await face.manager.predict(job_id, {"conversations": [convo], "generation": gen}))
    return FastJSONResponse({
        **base, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "finish_reason": FINISH.get(result.get("finish_reason"), "stop"), "logprobs": None}],
        "usage": usage(result)})


@router.post("/v1/completions")
async def completions(request: Request):
    face = request.app.state.face
    body = await json_object(request)
    model = body.get("model")
    job_id = job_of_model(model)
    gen, prompt = generation(body), prompt_of(body)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "created": created, "model": model, "object": "text_completion"}
    if body.get("stream"):
        def chunk(text, finish, opening):
            if opening:
                return None
            return {**base, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

        def closing(finish):
            return {**base, "choices": [{"index": 0, "text": "", "finish_reason": finish, "logprobs": None}]}

        return await _stream(face, job_id, {"text": prompt, "generation": gen}, body, chunk, closing)
    result = _generated(await face.manager.predict(job_id, {"inputs": [prompt], "generation": gen}))
    return FastJSONResponse({**base, "choices": [{"index": 0, "text": result["text"], "finish_reason":
                                                  FINISH.get(result.get("finish_reason"), "stop"), "logprobs": None}],
                             "usage": usage(result)})
