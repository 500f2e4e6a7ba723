"""Run the cloud server in this process: uvicorn, TLS when given a certificate, graceful drain.

Connections are guarded (:mod:`splitveil.serve.connections`): a cap on open connections, deadlines
for a request's headers and body. On SIGTERM or SIGINT the server stops accepting connections, answers ``/readyz`` with 503, lets the
requests in flight finish (up to ``drain_timeout`` seconds), stops the batcher, and exits.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import torch
import uvicorn

from splitveil.errors import ConfigError
from splitveil.serve.cloud_runtime import Runtime, load_cloud_runtime
from splitveil.serve.connections import ConnectionLimits, guarded_protocol
from splitveil.serve.server import ServerSettings, ServerState, create_app


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, which also tells readiness probes that it is draining as soon as it is asked to stop."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.draining = True
        super().handle_exit(sig, frame)


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    threads: int = 1,
    drain_timeout: float = 30.0,
    limits: ConnectionLimits | None = None,
    log_level: str = "warning",
    runtime: Runtime = "torch",
) -> None:
    """Serve the cloud half of the bundle at ``checkpoint`` until stopped, within ``limits``
    (default: :class:`ConnectionLimits`' defaults), computed by ``runtime``: the bundle's torch half, or
    ``cloud.onnx`` beside it in ONNX Runtime on ``threads`` intra-op threads."""
    if (certfile is None) != (keyfile is None):
        raise ConfigError("TLS needs both --cert and --key (or neither, for plain HTTP)")
    for path in (certfile, keyfile):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    torch.set_num_threads(threads)
    # A file-size limit (`ulimit -f`) must fail a capture write with EFBIG, which the capture recorder
    # handles, rather than kill the server with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    cloud = load_cloud_runtime(checkpoint, runtime, threads=threads)
    app = create_app(cloud, settings)
    protocol = guarded_protocol(limits or ConnectionLimits(), on_refused=app.state.metrics.count_refusal)
    config = uvicorn.Config(
        app,
        http=protocol,
        host=host,
        port=port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        # uvicorn types it int, but only hands it to asyncio.timeout(), which takes float seconds.
        timeout_graceful_shutdown=drain_timeout,  # type: ignore[arg-type]  # a float works (see above)
        log_level=log_level,
        access_log=False,
        lifespan="on",
        proxy_headers=False,  # no route reads the client's address; the middleware costs every request
    )
    logging.getLogger("splitveil.serve").info("serving %s (%s) on %s:%d", checkpoint, runtime, host, port)
    _DrainingServer(config, app.state).run()
