"""The cloud server: the cloud half of a deployed split behind HTTP (FastAPI on uvicorn).

Endpoints:

* ``POST /v1/infer`` — body: one feature tensor in the wire format (:mod:`splitveil.serve.codec`),
  ``(n, *feature_shape)``; answer: the logits ``(n, K)`` as float32 in the same format. Salted
  models answer salted logits: the API has no field through which a salt could arrive.
* ``GET /v1/model`` — what a client needs to talk to this server (feature shape, limits, codecs).
* ``GET /healthz`` (alive), ``GET /readyz`` (serving: not draining, and a capture in ``fail`` mode
  can be written), ``GET /metrics`` (Prometheus).

Every request to ``/v1/*`` needs ``Authorization: Bearer <token>`` unless the server was started
without auth. Refusals are JSON ``{"detail": ...}`` with a 4xx status that says what is wrong:
401 token, 413 too large, 415 not the wire format's media type, 400 malformed body, 422 shape;
507 when the request cannot be recorded in the capture and ``capture_errors`` is ``fail``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from splitveil.serve.batching import MicroBatcher
from splitveil.serve.bundle import LoadedHalf
from splitveil.serve.capture import CaptureWriter
from splitveil.serve.capture_recorder import CaptureRecorder
from splitveil.serve.cloud_runtime import CloudRuntime, as_runtime
from splitveil.serve.codec import CODECS, MAX_HEADER_BYTES, MEDIA_TYPE, WIRE_VERSION
from splitveil.serve.infer_route import InferRoute, Receive, Scope, Send
from splitveil.serve.metrics import ServerMetrics
from splitveil.serve.pending_bodies import PendingBodies
from splitveil.serve.refusal import Refusal, authorize


@dataclass(frozen=True)
class ServerSettings:
    """How the server batches, what it accepts, and who may call it."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_request_samples: int = 64
    tokens: frozenset[str] | None = None  # None: no authentication (loopback experiments only)
    capture: Path | None = None
    capture_errors: Literal["fail", "skip"] = "fail"  # see splitveil.serve.capture_recorder
    capture_max_bytes: int | None = None  # rotate to a new numbered file before one grows past this
    capture_max_files: int | None = None  # with capture_max_bytes: then capture fails
    max_pending_bytes: int | None = None  # request bodies held at once (None: see PendingBodies.for_server)


class ServerState:
    """What the routes share: the batcher, the metrics, the capture file, and whether it drains.

    ``cloud`` is the cloud half as a runtime (torch or ONNX, :mod:`splitveil.serve.cloud_runtime`): the
    batcher calls its forward pass, the routes read its metadata, and neither knows which runtime it is.
    """

    def __init__(self, cloud: LoadedHalf | CloudRuntime, settings: ServerSettings) -> None:
        self.cloud = as_runtime(cloud)
        self.settings = settings
        self.metrics = ServerMetrics()
        self.feature_shape = self.cloud.feature_shape
        self.max_body = max_body_bytes(self.feature_shape, settings.max_request_samples)
        self.pending = PendingBodies.for_server(settings.max_pending_bytes, self.max_body)
        self.metrics.pending_bytes.set_function(lambda: self.pending.held)
        self.batcher = MicroBatcher(
            self.cloud.forward,
            max_batch=settings.max_batch,
            max_wait=settings.max_wait_ms / 1000,
            on_batch=self.metrics.batch_size.observe,
        )
        self.capture = (
            _capture_recorder(settings.capture, settings, self.metrics, self.max_body) if settings.capture else None
        )
        self.ready = False
        self.draining = False


def max_body_bytes(feature_shape: tuple[int, ...], max_request_samples: int) -> int:
    """The largest body a valid request can be: float32 at the sample limit, plus zstd's worst-case
    expansion of incompressible data (well under 1%) and the header."""
    return MAX_HEADER_BYTES + int(4 * prod(feature_shape) * max_request_samples * 1.01) + 1024


# With a trailing slash too: FastAPI has no such route (it would answer 404), and a client that adds
# the slash should reach the model all the same.
_INFER_PATHS = frozenset({"/v1/infer", "/v1/infer/"})


class CloudApp:
    """The server's ASGI application: ``/v1/infer`` by :class:`InferRoute`, the rest by FastAPI.

    FastAPI serves the control routes (health, readiness, metrics, model description) and the
    lifespan; the inference route bypasses it because it is the hot path (see ``infer_route``).
    """

    def __init__(self, api: FastAPI, state: ServerState) -> None:
        self.api = api
        self.state = state
        self.infer = InferRoute(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _INFER_PATHS:
            await self.infer(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(cloud: LoadedHalf | CloudRuntime, settings: ServerSettings | None = None) -> CloudApp:
    """The ASGI application serving ``cloud``: the cloud half of a bundle, computed by torch (a loaded half,
    or :func:`~splitveil.serve.cloud_runtime.load_cloud_runtime`'s torch runtime) or by ONNX Runtime."""
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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready and not state.draining:
            if state.capture is not None and state.capture.blocks_readiness():
                failure = state.capture.failure
                cause = failure.cause if failure else "unknown"
                return JSONResponse({"status": "capture failing", "cause": cause}, status_code=503)
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining" if state.draining else "starting"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(Refusal)
    async def refused(_: Request, refusal: Refusal) -> JSONResponse:
        state.metrics.errors.labels(reason=refusal.reason).inc()
        return JSONResponse({"detail": refusal.detail}, status_code=refusal.status, headers=refusal.headers)

    @app.get("/v1/model")
    async def model_info(request: Request) -> JSONResponse:
        authorize(request.headers.get("authorization"), state.settings.tokens)
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
                "max_pending_bytes": state.pending.capacity,
            }
        )

    return CloudApp(app, state)


def _capture_recorder(
    path: Path, settings: ServerSettings, metrics: ServerMetrics, largest_body: int
) -> CaptureRecorder:
    writer = CaptureWriter(path, max_bytes=settings.capture_max_bytes, max_files=settings.capture_max_files)
    return CaptureRecorder(writer, on_error=settings.capture_errors, metrics=metrics, largest_body=largest_body)
