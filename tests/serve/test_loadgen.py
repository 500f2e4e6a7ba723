"""The load generator against a real server process: every request sent once, failures counted by cause."""

import httpx
import pytest
import torch

from splitveil.serve.codec import encode
from splitveil.serve.loadgen import run_load
from splitveil.serve.process import ServerProcess


@pytest.fixture
def served(bundle, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("right-token\n")
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)]) as server:
        yield server


def test_sends_exactly_the_requests_asked_for(served, tiny_data, trained):
    from splitveil.split import cut

    edge = cut(trained.model, at="relu22").edge.eval()
    with torch.no_grad():
        bodies = [encode(edge(tiny_data.test.images[i : i + 1])) for i in range(3)]
    result = run_load(served.url, bodies, concurrency=4, requests=37, token="right-token")
    assert not result.errors
    assert len(result.latencies) == 37
    assert result.throughput > 0 and 0 < result.quantile_ms(0.5) <= result.quantile_ms(0.99)
    assert result.bytes_per_request == pytest.approx(sum(len(b) for b in bodies) / 3, rel=0.05)
    metrics = httpx.get(served.url + "/metrics").text
    assert "splitveil_samples_total 37.0" in metrics  # the server saw each request exactly once


def test_the_server_process_reports_its_cpu_time(served, tiny_data, trained):
    from splitveil.split import cut

    started = served.cpu_seconds()
    assert started > 0.1  # starting up (importing torch, loading the model) alone takes more
    edge = cut(trained.model, at="relu22").edge.eval()
    with torch.no_grad():
        body = encode(edge(tiny_data.test.images[:1]))
    run_load(served.url, [body], concurrency=4, requests=400, token="right-token")
    assert served.cpu_seconds() > started


def test_refusals_are_counted_not_raised(served, tiny_data):
    result = run_load(served.url, [b"not a tensor"], concurrency=2, requests=5, token="wrong-token")
    assert result.errors == {"HTTP 401": 5}
    assert result.latencies == [] and result.throughput == 0


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="concurrency >= 1"):
        run_load("http://127.0.0.1:1", [b"x"], concurrency=0, requests=1)


def test_connection_errors_are_counted_by_cause():
    from splitveil.serve.process import free_port

    result = run_load(f"http://127.0.0.1:{free_port()}", [b"x"], concurrency=2, requests=6)
    assert result.errors == {"ConnectionRefusedError": 6} and result.latencies == []


def test_only_plain_http_addresses_are_taken():
    with pytest.raises(ValueError, match="plain http://host:port"):
        run_load("https://127.0.0.1:8443", [b"x"], concurrency=1, requests=1)


class _StubServer:
    """A TCP server on loopback that reads requests and answers each with ``reply`` (None: never)."""

    def __init__(self, reply: bytes | None):
        import socket
        import threading

        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading

        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection):
        while True:
            try:
                if not connection.recv(65536):
                    return
                if self.reply is not None:
                    connection.sendall(self.reply)
            except OSError:
                return

    def close(self):
        self.sock.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.parametrize(
    ("reply", "cause"),
    [(None, "TimeoutError"), (b"NOT HTTP AT ALL\r\n\r\n", "HttpParserError")],
)
def test_no_answer_or_a_garbled_one_is_counted_by_cause(reply, cause):
    stub = _StubServer(reply)
    try:
        result = run_load(stub.url, [b"x"], concurrency=2, requests=4, timeout=0.2)
    finally:
        stub.close()
    assert result.errors == {cause: 4} and result.latencies == []


def test_an_answer_that_closes_the_connection_makes_the_client_reconnect():
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    stub = _StubServer(reply)
    try:
        result = run_load(stub.url, [b"x"], concurrency=1, requests=5, timeout=2)
    finally:
        stub.close()
    assert not result.errors and len(result.latencies) == 5
    assert len(stub.connections) == 5  # one connection per request: each answer closed its own
