"""api/auth.py: the bearer-token interceptor accepts a listed token, exempts health and reflection, and
replaces every other call's handler with one that aborts UNAUTHENTICATED, of the same streaming kind."""

from __future__ import annotations

import grpc
import pytest

from tunewire_server.api.auth import BearerTokenInterceptor

METHOD = "/tunewire.v1.TuningService/GetJob"


class CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata=()):
        self.method = method
        self.invocation_metadata = tuple(metadata)


class Aborted(Exception):
    pass


class Context:
    """What a refusal handler uses of grpc.aio.ServicerContext: abort, which raises."""

    def __init__(self):
        self.code = None

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted


async def ok(request, context):
    return "ok"


HANDLERS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler(ok),
    "unary_stream": grpc.unary_stream_rpc_method_handler(ok),
    "stream_unary": grpc.stream_unary_rpc_method_handler(ok),
    "stream_stream": grpc.stream_stream_rpc_method_handler(ok),
}


async def intercept(tokens, metadata, method=METHOD, handler=HANDLERS["unary_unary"]):
    async def continuation(details):
        return handler

    return await BearerTokenInterceptor(tokens).intercept_service(continuation, CallDetails(method, metadata))


@pytest.mark.parametrize("value", ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret  "])
async def test_a_listed_token_passes_through_to_the_real_handler(value):
    assert await intercept(["other", "s3cret"], [("authorization", value)]) is HANDLERS["unary_unary"]


@pytest.mark.parametrize("metadata", [
    [],
    [("authorization", "Bearer wrong")],
    [("authorization", "Basic s3cret")],  # another scheme
    [("authorization", "s3cret")],
    [("x-token", "Bearer s3cret")],
    [("authorization", "Bearer s3cret-and-more")],
])
async def test_a_missing_or_wrong_token_is_refused_unauthenticated(metadata):
    handler = await intercept(["s3cret"], metadata)
    assert handler is not HANDLERS["unary_unary"]
    context = Context()
    with pytest.raises(Aborted):
        await handler.unary_unary(object(), context)
    assert context.code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in context.details


async def test_an_empty_token_is_never_accepted_even_if_listed():
    handler = await intercept([""], [("authorization", "Bearer ")])
    assert handler is not HANDLERS["unary_unary"]


@pytest.mark.parametrize("method", ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/X",
                                    "/grpc.reflection.v1alpha.ServerReflection/X"])
async def test_health_and_reflection_need_no_token(method):
    assert await intercept(["s3cret"], [], method=method) is HANDLERS["unary_unary"]


async def test_an_unknown_method_stays_unknown():
    assert await intercept(["s3cret"], [], handler=None) is None


@pytest.mark.parametrize("kind", sorted(HANDLERS))
async def test_the_refusal_has_the_same_streaming_kind(kind):
    handler = await intercept(["s3cret"], [], handler=HANDLERS[kind])
    assert handler is not HANDLERS[kind]
    assert getattr(handler, kind) is not None
    assert [k for k in HANDLERS if getattr(handler, k) is not None] == [kind]
    context = Context()
    with pytest.raises(Aborted):
        result = getattr(handler, kind)(object(), context)
        if kind.endswith("stream"):
            async for _ in result:
                pass
        else:
            await result
    assert context.code == grpc.StatusCode.UNAUTHENTICATED
