"""Connections under abuse, with a real server process and real sockets: idle crowds, slow headers,
slow bodies, and more connections than the server agreed to hold."""

import resource
import socket
import time

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
