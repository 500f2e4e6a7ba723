"""The edge client against a lying server: a real HTTP server on a loopback socket answers what it likes.

Every answer that is not exactly ``n x num_classes`` finite float32 logits in the wire format must
become one ``ServeError`` line, and ``splitveil infer`` must print that line and exit 2 without a
traceback. The zstd bombs are built by hand (a frame of run-length blocks that declares 3 GiB), so
the test costs 100 kB, and the client's peak memory shows that nothing of them was inflated.
"""

import json
import resource
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from torch import nn

from splitveil.errors import ServeError
from splitveil.serve import MEDIA_TYPE, encode
from splitveil.serve.client import EdgeClient
from splitveil.serve.codec import MAGIC, WIRE_VERSION

SAMPLES, CLASSES = 2, 3
#: The answer of the issue's probe: 805,306,368 float32 values, 3 GiB once inflated.
BOMB_BYTES = 805_306_368 * 4


class LyingServer:
    """A loopback HTTP server that answers every request with ``status``, ``headers`` and ``body``.

    ``body`` may be a list of chunks, sent without a length (the end of the answer is the end of the
    connection), so a client cannot learn the size in advance.
    """

    def __init__(self) -> None:
        self.status, self.headers, self.body = 200, {"content-type": MEDIA_TYPE}, b""
        lying = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(lying.status)
                chunked = isinstance(lying.body, list)
                headers = dict(lying.headers)
                if chunked:
                    headers["connection"] = "close"
                else:
                    headers.setdefault("content-length", str(len(lying.body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for chunk in lying.body if chunked else [lying.body]:
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client stopped reading: what it is meant to do
                        break
                self.close_connection = chunked

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, body: bytes | list[bytes], *, status: int = 200, **headers: str) -> None:
        self.status, self.body = status, body
        self.headers = {"content-type": MEDIA_TYPE, **{k.replace("_", "-"): v for k, v in headers.items()}}

    def __enter__(self) -> "LyingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up on a lie is the expected outcome, not an error to print


@pytest.fixture
def lying() -> Iterator[LyingServer]:
    with LyingServer() as server:
        yield server


@pytest.fixture
def client(lying) -> Iterator[EdgeClient]:
    with EdgeClient(nn.Identity(), lying.url, num_classes=CLASSES, retries=0, timeout=5.0) as edge_client:
        yield edge_client


def _header(shape: tuple[int, ...], *, codec: int = 0, zstd: bool = False) -> bytes:
    return MAGIC + bytes([WIRE_VERSION, codec, int(zstd), len(shape)]) + struct.pack(f"<{len(shape)}I", *shape)


def _rle_zstd_frame(size: int) -> bytes:
    """A valid zstd frame that declares and holds ``size`` zero bytes, as 4-byte run-length blocks."""
    block = 128 * 1024  # the largest block zstd allows
    header = b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x38]) + struct.pack("<Q", size)  # 8-byte size, 128 KiB window
    blocks = []
    for start in range(0, size, block):
        length, last = min(block, size - start), start + block >= size
        blocks.append((length << 3 | 1 << 1 | last).to_bytes(3, "little") + b"\x00")  # type 1: RLE
    return header + b"".join(blocks)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def test_the_hand_built_bomb_is_a_real_zstd_frame():
    import zstandard

    frame = _rle_zstd_frame(BOMB_BYTES)
    assert len(frame) < 110_000 and zstandard.frame_content_size(frame) == BOMB_BYTES
    with zstandard.ZstdDecompressor().stream_reader(frame) as reader:  # read a bounded prefix only
        assert reader.read(1 << 20) == b"\x00" * (1 << 20)


def test_honest_logits_pass_and_media_types_are_case_insensitive(lying, client):
    logits = torch.randn(SAMPLES, CLASSES)
    lying.answer(encode(logits), content_type="Application/X-Splitveil-Tensor; charset=binary")
    assert torch.equal(client.send(torch.zeros(SAMPLES, 4)), logits)


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (encode(torch.zeros(SAMPLES, 5)), {}, r"logits of shape \(2, 5\); 2 samples need \(2, 3\)"),
        (encode(torch.zeros(SAMPLES + 1, CLASSES)), {}, r"shape \(3, 3\); 2 samples need"),
        (encode(torch.zeros(SAMPLES * CLASSES)), {}, r"shape \(6,\)"),
        (encode(torch.zeros(SAMPLES, CLASSES), codec="float16"), {}, "float16 logits; the protocol answers float32"),
        (_header((SAMPLES, CLASSES)) + struct.pack("<6f", 0, 1, float("nan"), 0, 0, 0), {}, "NaN"),
        (b"garbage, not a tensor", {}, "malformed body: not a splitveil tensor"),
        (_header((SAMPLES, CLASSES)) + b"\x00" * 5, {}, "malformed body: payload is 5 bytes"),
        (b"<html>oops</html>", {"content_type": "text/html"}, "answered 'text/html', not application/x-splitveil"),
        (encode(torch.zeros(SAMPLES, CLASSES)), {"content_type": ""}, "answered 'no media type'"),
        (encode(torch.zeros(SAMPLES, CLASSES)), {"content_encoding": "gzip"}, "'gzip'-encoded body"),
    ],
    ids=["columns", "rows", "flat", "float16", "nan", "garbage", "short", "html", "no-type", "gzip"],
)
def test_every_malformed_answer_is_one_serve_error_line(lying, client, body, headers, message):
    lying.answer(body, **headers)
    with pytest.raises(ServeError, match=message) as refused:
        client.send(torch.zeros(SAMPLES, 4))
    assert "\n" not in str(refused.value)


def test_a_zstd_answer_declaring_3_gib_of_logits_is_refused_unread(lying, client):
    before = _peak_rss_bytes()
    bomb = _rle_zstd_frame(BOMB_BYTES)
    # The probe: the wire header declares 805,306,368 floats. Its 98 kB are more than
    # 2 x 3 logits can take, so the answer is refused by its length, unread.
    lying.answer(_header((BOMB_BYTES // 4,), zstd=True) + bomb)
    with pytest.raises(ServeError, match=r"answered 98\d\d\d bytes; at most 1087 were expected"):
        client.send(torch.zeros(SAMPLES, 4))
    # Cut to fit the length limit, it is refused by the shape its wire header declares...
    lying.answer(_header((BOMB_BYTES // 4,), zstd=True) + bomb[:400])
    with pytest.raises(ServeError, match=r"logits of shape \(805306368,\); 2 samples need \(2, 3\)"):
        client.send(torch.zeros(SAMPLES, 4))
    # ...and behind an honest wire header, by the size its zstd frame declares.
    lying.answer(_header((SAMPLES, CLASSES), zstd=True) + bomb[:400])
    with pytest.raises(ServeError, match="zstd frame declares 3221225472 bytes but the header's shape needs 24"):
        client.send(torch.zeros(SAMPLES, 4))
    assert _peak_rss_bytes() - before < 1 << 30  # nothing near 3 GiB was ever inflated


def test_an_answer_longer_than_its_logits_can_be_is_cut_off(lying, client):
    huge = 10 * 1024**3
    lying.answer(b"", content_length=str(huge))  # a length no logits of 2 x 3 can have: refused unread
    with pytest.raises(ServeError, match=f"answered {huge} bytes; at most"):
        client.send(torch.zeros(SAMPLES, 4))
    before = _peak_rss_bytes()
    lying.answer([b"\x00" * 65536] * 4096)  # 256 MiB with no length: reading stops at the limit
    with pytest.raises(ServeError, match="answered more than the .* bytes expected"):
        client.send(torch.zeros(SAMPLES, 4))
    assert _peak_rss_bytes() - before < 64 * 1024**2


def test_a_refusal_is_one_line_whatever_the_server_writes(lying, client):
    lying.answer(json.dumps({"detail": "line one\nline two\x1b[31m"}).encode(), status=422)
    with pytest.raises(ServeError, match=r"HTTP 422\): line one line two\?\[31m") as refused:
        client.send(torch.zeros(SAMPLES, 4))
    assert "\n" not in str(refused.value)
    lying.answer(b"x" * 100_000, status=400, content_type="text/plain")
    with pytest.raises(ServeError, match=r"HTTP 400\): x+\.\.\.$"):
        client.send(torch.zeros(SAMPLES, 4))


def test_a_model_description_that_is_not_json_is_refused(lying, client):
    lying.answer(b"[1, 2", content_type="application/json")
    with pytest.raises(ServeError, match="v1/model answered something other than a JSON object"):
        client.info()


def test_a_connection_cut_mid_answer_is_named(lying, client):
    lying.answer(encode(torch.zeros(SAMPLES, CLASSES))[:10], content_length="100")  # promises 100, sends 10
    with pytest.raises(ServeError, match="could not reach the cloud .* after 1 tries"):
        client.send(torch.zeros(SAMPLES, 4))


# --- `splitveil infer` against the lying server: one line on stderr, exit 2, no traceback ---


def test_infer_prints_one_line_and_exits_2_when_the_server_lies(lying, bundle, tiny_data, tmp_path):
    images = tmp_path / "images.npy"
    np.save(images, tiny_data.test.images[:2].numpy())
    command = [sys.executable, "-m", "splitveil.cli", "infer", str(images), "--checkpoint", str(bundle)]
    command += ["--url", lying.url]
    for body, message in [
        (encode(torch.zeros(2, 7)), "logits of shape (2, 7); 2 samples need (2, 3)"),
        (_header((BOMB_BYTES // 4,), zstd=True) + _rle_zstd_frame(BOMB_BYTES)[:400], "shape (805306368,)"),
        (b"garbage", "malformed body"),
    ]:
        lying.answer(body)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
