"""``POST /v1/infer`` as a plain ASGI handler, beside the FastAPI app that serves the other routes.

Why not a FastAPI route: this is the one path every request takes, and on a light cloud half the
framework's per-request work (routing, the ``Request`` object, the middleware stack, the
``Response`` class) costs more than the forward pass. Dynamic batching can share a forward pass
between requests but not their HTTP handling, so that overhead is what caps a batched server's
throughput (measured in docs/BENCHMARKS.md, "Serving over loopback"). Here a request is one pass
over the ASGI header list, one body read, the wire-format checks, and two ``send`` calls.

Refusals are the same JSON ``{"detail": ...}`` with the same statuses as the rest of the API.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from splitveil.errors import WireFormatError
from splitveil.serve.batching import ModelError
from splitveil.serve.capture import CaptureError
from splitveil.serve.codec import MEDIA_TYPE, decode, encode, read_header
from splitveil.serve.pending_bodies import PendingBodies
from splitveil.serve.refusal import Refusal, authorize

if TYPE_CHECKING:
    from splitveil.serve.server import ServerState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MEDIA_TYPE = MEDIA_TYPE.encode()
_ANSWER_HEADERS = [(b"content-type", _MEDIA_TYPE)]


class ClientGone(Exception):
    """The client hung up before its whole body arrived: there is no one to answer."""


class InferRoute:
    """The ASGI callable answering ``POST /v1/infer`` from the shared :class:`ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._ok = state.metrics.requests.labels(status="200")  # bound once: the common case

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.state.metrics
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            try:
                answer = await self._answer(scope, receive)
            except Refusal as refusal:
                metrics.errors.labels(reason=refusal.reason).inc()
                metrics.requests.labels(status=str(refusal.status)).inc()
                await send({"type": "http.response.start", "status": refusal.status, "headers": refusal.asgi_headers()})
                await send({"type": "http.response.body", "body": refusal.body})
                return
            except ClientGone:
                metrics.errors.labels(reason="disconnect").inc()
                metrics.requests.labels(status="499").inc()  # nginx's code for "client closed request"
                return
            await send({"type": "http.response.start", "status": 200, "headers": [*_ANSWER_HEADERS, _length(answer)]})
            await send({"type": "http.response.body", "body": answer})
            self._ok.inc()
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> bytes:
        state = self.state
        if scope["method"] != "POST":
            raise Refusal(405, "method", "/v1/infer takes POST", {"Allow": "POST"})
        headers = _headers(scope)
        authorization = headers.get(b"authorization")
        authorize(None if authorization is None else authorization.decode("latin-1"), state.settings.tokens)
        if state.draining:
            raise Refusal(503, "draining", "the server is shutting down; retry on another replica")
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        if media_type.lower() != MEDIA_TYPE:  # media types are case-insensitive (RFC 9110, 8.3.1)
            raise Refusal(415, "media_type", f"send the feature as {MEDIA_TYPE}, not {media_type or 'nothing'!r}")
        body = await _read_body(receive, headers.get(b"content-length"), state)
        try:
            return await self._classify(body)
        finally:
            state.pending.release(len(body))

    async def _classify(self, body: bytes) -> bytes:
        state = self.state
        try:
            header = read_header(body)
        except WireFormatError as exc:
            raise Refusal(400, "malformed", str(exc)) from None
        samples, *feature = header.shape
        if tuple(feature) != state.feature_shape:
            expected = ", ".join(str(d) for d in state.feature_shape)
            detail = f"feature shape {tuple(header.shape)} does not match this model's (n, {expected})"
            raise Refusal(422, "shape", detail)
        if not 1 <= samples <= state.settings.max_request_samples:
            limit = state.settings.max_request_samples
            raise Refusal(422, "batch", f"{samples} samples in one request; send 1 to {limit}")
        try:
            features = decode(body, header=header)
        except WireFormatError as exc:
            raise Refusal(400, "malformed", str(exc)) from None
        if state.capture is not None:
            try:
                state.capture.record(body)
            except CaptureError as exc:  # --capture-errors fail: an unrecorded request is not served
                detail = f"the server cannot record requests for audit right now ({exc.cause}); retry later"
                raise Refusal(507, "capture", detail) from None
        try:
            logits = await state.batcher.submit(features)
            state.metrics.samples.inc(samples)
            return encode(logits)
        except ModelError as exc:  # a counted JSON 500; the server goes on
            raise Refusal(500, "model", str(exc)) from None
        except WireFormatError as exc:  # non-finite logits: the model failed too
            raise Refusal(500, "model", f"the cloud model's answer cannot be sent: {exc}") from None


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers give header names lower-cased. A repeated header keeps its first value, as
    # Starlette's do for the other routes, so every route checks the same Authorization.
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    return headers


async def _read_body(receive: Receive, declared: bytes | None, state: ServerState) -> bytes:
    """The whole body, held against the server's pending-body budget (the caller releases
    ``len(body)``); refused as soon as it is known to exceed the largest valid body, or to not fit
    the budget (without reading the rest)."""
    limit, pending = state.max_body, state.pending
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise _too_large(state)
        if not pending.fits(int(declared)):
            raise _over_budget(pending)
    chunks, size = [], 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if size + len(chunk) > limit:
                raise _too_large(state)
            if not pending.reserve(len(chunk)):
                raise _over_budget(pending)
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except BaseException:  # refused, gone or cancelled: what this body held is free again
        pending.release(size)
        raise


def _too_large(state: ServerState) -> Refusal:
    limit = state.settings.max_request_samples
    return Refusal(413, "too_large", f"body exceeds {state.max_body} bytes (max_request_samples={limit})")


def _over_budget(pending: PendingBodies) -> Refusal:
    detail = (
        f"the server holds as many request bodies as it may ({pending.capacity} bytes, --max-pending-bytes); "
        "retry shortly"
    )
    return Refusal(503, "pending_bytes", detail, {"Retry-After": "1"})


def _length(body: bytes) -> tuple[bytes, bytes]:
    return (b"content-length", str(len(body)).encode())
