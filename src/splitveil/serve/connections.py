"""Connection guards: a cap on open connections, and deadlines for a request's headers and body.

uvicorn keeps every accepted connection for as long as the client likes before its request is
complete: probes held 500 idle or slow-header sockets open for ever, 1,100 idle sockets at
``ulimit -n 1024`` made every correct request fail, and 600 connections each holding a half-sent
maximum-size body took the server to 1.27 GB. The guards here bound the first two; the third is
bounded by a budget over all pending bodies (:mod:`splitveil.serve.pending_bodies`):

* :class:`ConnectionLimits` says how many connections may be open and how long a request may take to
  arrive (its headers, then its body);
* :func:`guarded_protocol` is uvicorn's httptools protocol with those limits enforced per connection:
  one over the cap is answered 503 and closed at once (its file descriptor freed), a request whose
  headers or body are late is answered 408 and its connection closed;
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from splitveil.errors import ConfigError

Refusal = Literal["connections", "header_timeout", "body_timeout"]
#: File descriptors kept free of client connections: listening socket, capture file, logs, imports.
RESERVED_DESCRIPTORS = 64


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the server holds, and how long a request may take to arrive.

    ``max_connections`` ``None`` means as many as the process may open (its raised descriptor limit
    minus :data:`RESERVED_DESCRIPTORS`). ``header_timeout`` runs from the connection's first byte
    (or its opening) to the end of a request's headers; ``body_timeout`` from there to the body's
    last byte. An idle keep-alive connection is closed by uvicorn's own keep-alive timeout.
    """

    max_connections: int | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")

    def connection_cap(self) -> int:
        """The cap on open connections, after raising the descriptor limit as far as allowed."""
        available = raise_descriptor_limit() - RESERVED_DESCRIPTORS
        if available < 1:
            raise ConfigError(f"the process may open only {available + RESERVED_DESCRIPTORS} files; raise `ulimit -n`")
        return available if self.max_connections is None else min(self.max_connections, available)


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (a server's first need, and
    allowed without privileges); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may refuse; keep the soft limit it has
            pass
    return soft


def raw_json_response(status: int, reason: str, content: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for answers given outside any request
    cycle (a connection over the cap, a request that never finished arriving)."""
    body = json.dumps(content).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_OVER_CAP = raw_json_response(
    503, "Service Unavailable", {"error": "busy", "detail": "too many open connections; retry later"}
)
_HEADERS_LATE = raw_json_response(
    408, "Request Timeout", {"error": "timeout", "detail": "the request's headers did not arrive in time"}
)
_BODY_LATE = raw_json_response(
    408, "Request Timeout", {"error": "timeout", "detail": "the request's body did not arrive in time"}
)


def guarded_protocol(
    limits: ConnectionLimits, *, on_refused: Callable[[Refusal], None] = lambda _: None
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits`` enforced; ``on_refused`` counts each refusal."""
    cap = limits.connection_cap()

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        # uvicorn's own override narrows asyncio's BaseTransport to Transport; this one follows it.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
            super().connection_made(transport)
            if len(self.connections) > cap:
                on_refused("connections")
                transport.write(_OVER_CAP)
                transport.close()
                return
            self._arm(limits.header_timeout, _HEADERS_LATE, "header_timeout")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(limits.header_timeout, _HEADERS_LATE, "header_timeout")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(limits.body_timeout, _BODY_LATE, "body_timeout")

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float, answer: bytes, reason: Refusal) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._late, answer, reason)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self, answer: bytes, reason: Refusal) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_refused(reason)
            # An application that has started answering owns the response; otherwise say why we close.
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(answer)
            self.transport.close()

    return GuardedProtocol
