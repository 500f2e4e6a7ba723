"""Connections under abuse, with a real server process and real sockets: idle crowds, slow headers,
slow bodies, more connections than the server agreed to hold, and more pending body bytes."""

import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from splitveil.serve import MEDIA_TYPE, encode, load_half
from splitveil.serve.process import ServerProcess

IDLE = 1000
CAP = IDLE + 10  # connections the server holds: the idle crowd, the probes below, a few to spare
TIMEOUT = 1.5  # header and body deadline, seconds


@pytest.fixture
def descriptors():
    """Enough open files in this process for the idle crowd."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + 256
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"this test opens {needed} sockets; the hard limit is {hard} (raise `ulimit -Hn`)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _classify(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/infer", content=body, headers={"content-type": MEDIA_TYPE}, timeout=10)


def test_idle_crowds_slow_requests_and_excess_connections_are_bounded(bundle, descriptors):
    body = encode(torch.zeros(2, *load_half(bundle, "cloud").feature_shape))
    options = ["--no-auth", "--max-connections", str(CAP)]
    options += ["--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)]
    with ServerProcess(bundle, extra=options) as server:
        idle = [_connect(server.port) for _ in range(IDLE)]
        try:
            # A thousand connections that never send a byte do not keep correct requests out.
            assert all(_classify(server.url, body).status_code == 200 for _ in range(3))

            slow_headers = _connect(server.port)
            slow_headers.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
            slow_body = _connect(server.port)
            slow_body.sendall(
                b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: " + MEDIA_TYPE.encode()
                + f"\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body[:10]
            )  # fmt: skip
            # Connections past the cap are answered at once and closed, freeing their descriptors.
            excess = [_connect(server.port) for _ in range(CAP - IDLE + 5)]
            refused = [_answer(sock) for sock in excess]
            # (the few under the cap are idle too, and meet their header deadline instead)
            busy = [answer for answer in refused if answer.startswith(b"HTTP/1.1 503")]
            assert len(busy) >= 5 and all(b'"busy"' in answer for answer in busy)
            assert all(answer.startswith(b"HTTP/1.1 408") for answer in refused if answer not in busy)

            started = time.monotonic()
            late_headers, late_body = _answer(slow_headers), _answer(slow_body)
            assert late_headers.startswith(b"HTTP/1.1 408") and b"headers" in late_headers
            assert late_body.startswith(b"HTTP/1.1 408") and b"body" in late_body
            assert time.monotonic() - started < 10 * TIMEOUT
            # The idle crowd was dropped at its own header deadline, each told why.
            assert all(_answer(sock).startswith(b"HTTP/1.1 408") for sock in idle[::50])
            assert _classify(server.url, body).status_code == 200

            metrics = httpx.get(f"{server.url}/metrics").text
            for reason in ("connections", "header_timeout", "body_timeout"):
                assert f'splitveil_errors_total{{reason="{reason}"}}' in metrics
        finally:
            for sock in idle:
                sock.close()


CROWD = 60  # connections each sending most of a maximum-size body, then stalling
SENT = 4_000_000  # bytes each sends: the crowd would hold 240 MB unbounded
BUDGET = 16 * 2**20  # --max-pending-bytes
# the budget, uvicorn's 64 KiB per connection and slack (without a budget the crowd took 211 MiB)
GROWTH_BOUND = 4 * BUDGET
LARGEST = 8192  # --max-request-samples: about 9 MB bodies at the test bundle's cut


def _stall_mid_body(port: int, head: bytes, body: bytes) -> socket.socket:
    """Send the headers and the first SENT bytes of ``body``; the rest never comes."""
    sock = _connect(port)
    try:
        sock.sendall(head + body[:SENT])
    except OSError:  # refused mid-send: the server answered and closed; the answer is read later
        pass
    return sock


def test_memory_for_pending_bodies_is_bounded_whatever_the_connections(bundle):
    feature_shape = load_half(bundle, "cloud").feature_shape
    full = encode(torch.rand(LARGEST, *feature_shape))  # a maximum-size request
    assert len(full) > SENT
    head = (
        b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: " + MEDIA_TYPE.encode()
        + f"\r\ncontent-length: {len(full)}\r\n\r\n".encode()
    )  # fmt: skip
    options = ["--no-auth", "--max-request-samples", str(LARGEST), "--max-pending-bytes", str(BUDGET)]
    options += ["--body-timeout", "5"]
    with ServerProcess(bundle, extra=options) as server:
        baseline = server.rss_bytes()
        with ThreadPoolExecutor(CROWD) as pool:
            crowd = list(pool.map(lambda _: _stall_mid_body(server.port, head, full), range(CROWD)))
        try:
            grown = server.rss_bytes() - baseline
            assert grown < GROWTH_BOUND, f"the server grew {grown / 2**20:.0f} MiB holding half-sent bodies"
            answers = [_answer(sock) for sock in crowd]
        finally:
            for sock in crowd:
                sock.close()
        over_budget = [answer for answer in answers if answer.startswith(b"HTTP/1.1 503")]
        assert all(b"pending_bytes" in answer or b"--max-pending-bytes" in answer for answer in over_budget)
        assert all(b"retry-after: 1" in answer.lower() for answer in over_budget)
        # At most BUDGET / SENT bodies fit whole; every other one was refused, the rest met their deadline.
        assert len(over_budget) >= CROWD - BUDGET // SENT - 1
        assert all(answer.startswith((b"HTTP/1.1 503", b"HTTP/1.1 408")) for answer in answers)

        # Once the crowd is gone the budget is whole again: a full-size request is served.
        assert _classify(server.url, full).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "splitveil_pending_body_bytes 0.0" in metrics
        assert 'splitveil_errors_total{reason="pending_bytes"}' in metrics
