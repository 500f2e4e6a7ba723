"""A load generator for the cloud server: N concurrent keep-alive connections posting encoded features.

It sends bodies that are already encoded, so that what it measures is the server and the network,
not the edge's compute (in a deployment every device runs its own edge). It uses aiohttp because a
load generator must be cheaper per request than the server it loads: on a small machine a slower
client would cap the throughput it reports and hide what the server does.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

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

    A failed request (a non-200 answer or a connection error) is counted by its cause and does not
    stop the run.
    """
    if concurrency < 1 or requests < 1 or not bodies:
        raise ValueError("run_load needs concurrency >= 1, requests >= 1 and at least one body")
    return asyncio.run(_load(url.rstrip("/") + "/v1/infer", bodies, concurrency, requests, token, timeout))


async def _load(
    endpoint: str, bodies: Sequence[bytes], concurrency: int, requests: int, token: str | None, timeout: float
) -> LoadResult:
    import aiohttp

    headers = {"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
    if token:
        headers["authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent_bytes = 0
    tickets = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent_bytes
        for ticket in tickets:  # one shared iterator: the clients together send exactly `requests`
            body = bodies[ticket % len(bodies)]
            started = time.perf_counter()
            try:
                async with session.post(endpoint, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors[f"HTTP {response.status}"] += 1
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)
            sent_bytes += len(body)

    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=client_timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    per_request = sent_bytes / len(latencies) if latencies else 0.0
    return LoadResult(concurrency, requests, seconds, latencies, errors, per_request)
