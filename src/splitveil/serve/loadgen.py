"""A load generator for the cloud server: N concurrent keep-alive connections posting encoded features.

It sends bodies that are already encoded, so that what it measures is the server and the network,
not the edge's compute (in a deployment every device runs its own edge). On one machine the load
generator and the server share the cores, so every microsecond the client spends per request is
taken from the server it measures. A general HTTP client (aiohttp, httpx) spends more per request
than a lean server does; this one writes requests prepared in advance on raw asyncio connections
and only frames the answers, with httptools (the C parser uvicorn uses), reading their status.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from splitveil.serve.codec import MEDIA_TYPE


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies are per request, in seconds."""

    concurrency: int
    requests: int
    seconds: float
    latencies: list[float] = field(repr=False)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_per_request: float = 0.0

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return (self.requests - sum(self.errors.values())) / self.seconds

    def quantile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return 1e3 * self.latencies[0] if self.latencies else float("nan")
        return 1e3 * statistics.quantiles(self.latencies, n=100, method="inclusive")[round(100 * q) - 1]

    def summary(self) -> dict[str, float | int]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": sum(self.errors.values()),
            "p50_ms": self.quantile_ms(0.50),
            "p99_ms": self.quantile_ms(0.99),
            "throughput": self.throughput,
            "bytes_per_request": self.bytes_per_request,
        }


def run_load(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    requests: int,
    token: str | None = None,
    timeout: float = 30.0,
) -> LoadResult:
    """Post ``requests`` bodies (cycling through ``bodies``) to ``url``/v1/infer from ``concurrency`` clients.

    ``url`` is a plain ``http://host:port`` address (the benchmark runs on loopback). A failed
    request (a non-200 answer, a connection error or no answer within ``timeout`` seconds) is counted
    by its cause and does not stop the run; the client reconnects for its next request. ``timeout``
    covers the whole request, (re)connecting included.
    """
    if concurrency < 1 or requests < 1 or not bodies:
        raise ValueError("run_load needs concurrency >= 1, requests >= 1 and at least one body")
    address = urlsplit(url)
    if address.scheme != "http" or not address.hostname:
        raise ValueError(f"run_load takes a plain http://host:port address, got {url!r}")
    target = _Target(address.hostname, address.port or 80, address.netloc, address.path.rstrip("/") + "/v1/infer")
    prepared = [target.request(body, token) for body in bodies]
    return asyncio.run(_load(target, prepared, [len(body) for body in bodies], concurrency, requests, timeout))


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    netloc: str
    path: str

    def request(self, body: bytes, token: str | None) -> bytes:
        """The whole HTTP/1.1 request for ``body``, headers included, as it goes on the wire."""
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.netloc}",
            f"content-type: {MEDIA_TYPE}",
            f"accept: {MEDIA_TYPE}",
            f"content-length: {len(body)}",
        ]
        if token:
            lines.append(f"authorization: Bearer {token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_connection hands stream protocols a Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            self._finish(exc)

    def on_message_complete(self) -> None:  # httptools: the answer's last byte has arrived
        if not self._parser.should_keep_alive():
            self.close()
        self._finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(exc or ConnectionResetError("the server closed the connection"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, request: bytes, timeout: float) -> int:
        """Send ``request``; the status of its answer."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        assert self._transport is not None
        self._transport.write(request)
        timer = loop.call_later(timeout, self._finish, TimeoutError(f"no answer within {timeout} s"))
        try:
            return await waiter
        finally:
            timer.cancel()

    def _finish(self, failure: Exception | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if failure is None:
            waiter.set_result(self._parser.get_status_code())
        else:
            waiter.set_exception(failure)


async def _load(
    target: _Target, prepared: list[bytes], sizes: list[int], concurrency: int, requests: int, timeout: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent_bytes = 0
    tickets = iter(range(requests))

    async def client() -> None:
        nonlocal sent_bytes
        connection: _Connection | None = None
        for ticket in tickets:  # one shared iterator: the clients together send exactly `requests`
            index = ticket % len(prepared)
            started = time.perf_counter()
            try:
                if connection is None or connection.closed:
                    connect = loop.create_connection(_Connection, target.host, target.port)
                    _, opened = await asyncio.wait_for(connect, timeout)
                    connection = opened
                # one deadline per request: connecting spends from the same `timeout` as the answer
                remaining = started + timeout - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError(f"connecting took the whole {timeout} s")
                status = await connection.exchange(prepared[index], remaining)
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                errors[type(exc).__name__] += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if status != 200:
                errors[f"HTTP {status}"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            sent_bytes += sizes[index]
        if connection is not None:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    per_request = sent_bytes / len(latencies) if latencies else 0.0
    return LoadResult(concurrency, requests, seconds, latencies, errors, per_request)
