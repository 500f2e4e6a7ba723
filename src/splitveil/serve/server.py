"""The cloud server: the cloud half of a deployed split behind HTTP (FastAPI on uvicorn).

Endpoints:

* ``POST /v1/infer`` — body: one feature tensor in the wire format (:mod:`splitveil.serve.codec`),
  ``(n, *feature_shape)``; answer: the logits ``(n, K)`` as float32 in the same format. Salted
  models answer salted logits: the API has no field through which a salt could arrive.
* ``GET /v1/model`` — what a client needs to talk to this server (feature shape, limits, codecs).
* ``GET /healthz`` (alive), ``GET /readyz`` (serving, not draining), ``GET /metrics`` (Prometheus).

Every request to ``/v1/*`` needs ``Authorization: Bearer <token>`` unless the server was started
without auth. Refusals are JSON ``{"detail": ...}`` with a 4xx status that says what is wrong:
401 token, 413 too large, 415 not the wire format's media type, 400 malformed body, 422 shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from splitveil.errors import WireFormatError
from splitveil.serve.auth import token_accepted
from splitveil.serve.batching import MicroBatcher
from splitveil.serve.bundle import LoadedHalf
from splitveil.serve.capture import CaptureWriter
from splitveil.serve.codec import CODECS, MAX_HEADER_BYTES, MEDIA_TYPE, WIRE_VERSION, decode, encode, read_header
from splitveil.serve.metrics import ServerMetrics


@dataclass(frozen=True)
class ServerSettings:
    """How the server batches, what it accepts, and who may call it."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_request_samples: int = 64
    tokens: frozenset[str] | None = None  # None: no authentication (loopback experiments only)
    capture: Path | None = None


class ServerState:
    """What the routes share: the batcher, the metrics, the capture file, and whether it drains."""

    def __init__(self, cloud: LoadedHalf, settings: ServerSettings) -> None:
        self.cloud = cloud
        self.settings = settings
        self.metrics = ServerMetrics()
        self.feature_shape = cloud.feature_shape
        per_sample = 4 * prod(self.feature_shape)
        # The largest body a valid request can be: float32 at the sample limit, plus zstd's worst-case
        # expansion of incompressible data (well under 1%) and the header.
        self.max_body = MAX_HEADER_BYTES + int(per_sample * settings.max_request_samples * 1.01) + 1024
        self.batcher = MicroBatcher(
            cloud.module,
            max_batch=settings.max_batch,
            max_wait=settings.max_wait_ms / 1000,
            on_batch=self.metrics.batch_size.observe,
        )
        self.capture = CaptureWriter(settings.capture) if settings.capture else None
        self.ready = False
        self.draining = False


def create_app(cloud: LoadedHalf, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``cloud`` (the cloud half of a bundle)."""
    state = ServerState(cloud, settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()
            if state.capture is not None:
                state.capture.close()

    app = FastAPI(title="splitveil cloud", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.splitveil = state

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready and not state.draining:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining" if state.draining else "starting"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model")
    async def model_info(request: Request) -> JSONResponse:
        if refusal := _check_token(request, state):
            return refusal
        meta = state.cloud.metadata
        return JSONResponse(
            {
                "cut": meta["cut"],
                "feature_shape": list(state.feature_shape),
                "num_classes": meta["num_classes"],
                "codecs": list(CODECS),
                "wire_version": WIRE_VERSION,
                "media_type": MEDIA_TYPE,
                "max_request_samples": state.settings.max_request_samples,
                "max_body_bytes": state.max_body,
            }
        )

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        state.metrics.in_flight.inc()
        try:
            response = await _infer(request, state)
        finally:
            state.metrics.in_flight.dec()
        state.metrics.requests.labels(status=str(response.status_code)).inc()
        state.metrics.latency.observe(time.perf_counter() - started)
        return response

    return app


async def _infer(request: Request, state: ServerState) -> Response:
    if refusal := _check_token(request, state):
        return refusal
    if state.draining:
        return _refuse(state, 503, "draining", "the server is shutting down; retry on another replica")
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type != MEDIA_TYPE:
        return _refuse(state, 415, "media_type", f"send the feature as {MEDIA_TYPE}, not {media_type or 'nothing'!r}")
    body = await _read_body(request, state.max_body)
    if body is None:
        return _refuse(
            state,
            413,
            "too_large",
            f"body exceeds {state.max_body} bytes (max_request_samples={state.settings.max_request_samples})",
        )
    try:
        header = read_header(body)
    except WireFormatError as exc:
        return _refuse(state, 400, "malformed", str(exc))
    samples, *feature = header.shape
    if tuple(feature) != state.feature_shape:
        expected = ", ".join(str(d) for d in state.feature_shape)
        return _refuse(
            state, 422, "shape", f"feature shape {tuple(header.shape)} does not match this model's (n, {expected})"
        )
    if not 1 <= samples <= state.settings.max_request_samples:
        limit = state.settings.max_request_samples
        return _refuse(state, 422, "batch", f"{samples} samples in one request; send 1 to {limit}")
    try:
        features = decode(body, header=header)
    except WireFormatError as exc:
        return _refuse(state, 400, "malformed", str(exc))
    if state.capture is not None:
        state.capture.write(body)
    logits = await state.batcher.submit(features)
    state.metrics.samples.inc(samples)
    return Response(encode(logits), media_type=MEDIA_TYPE)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _check_token(request: Request, state: ServerState) -> JSONResponse | None:
    tokens = state.settings.tokens
    if tokens is None or token_accepted(request.headers.get("authorization"), tokens):
        return None
    missing = "authorization" not in request.headers
    return _refuse(
        state,
        401,
        "auth",
        "missing bearer token" if missing else "invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _refuse(
    state: ServerState, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    state.metrics.errors.labels(reason=reason).inc()
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
