"""The device's line to the cloud: features out, logits back, over HTTP(S) with the wire format.

:class:`CloudConnection` is the network half of an edge client, on numpy arrays, so the torch
client (:class:`splitveil.serve.client.EdgeClient`) and the torch-free one
(:class:`splitveil.edge.EdgeClient`) send and check exactly the same bytes.

Connection errors and 502/503/504 are retried with exponential backoff; any other refusal raises
:class:`~splitveil.errors.ServeError` with the server's explanation.

The connection does not trust the server either: an answer is read only up to the size that
``n x num_classes`` float32 logits can take, its header must declare exactly that shape before
anything is decoded (so a small zstd answer cannot inflate), and anything else (another media type,
another shape or codec, NaN, garbage, an HTTP-compressed body) is a one-line ``ServeError``.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any, TypedDict

import httpx
import numpy as np

from splitveil.errors import ServeError, WireFormatError
from splitveil.serve.codec import (
    CODECS,
    MAX_CLASSES,
    MAX_HEADER_BYTES,
    MEDIA_TYPE,
    Codec,
    decode_array,
    encode_array,
    read_header,
)

_RETRYABLE_STATUS = {502, 503, 504}
#: The most bytes read of an answer that is not logits: a refusal's JSON, or ``/v1/model``'s.
_TEXT_LIMIT = 64 * 1024


class ConnectionOptions(TypedDict, total=False):
    """How a client reaches the cloud: what both edge clients pass on to :class:`CloudConnection`."""

    token: str | None
    codec: Codec
    compress: bool
    timeout: float
    retries: int
    backoff: float
    verify: bool | str | Path


class CloudConnection:
    """Send features to the cloud half at ``url`` and read back its logits.

    Example::

        with CloudConnection("https://cloud:8443", token="...", num_classes=10) as cloud:
            logits = cloud.send(features)  # float32 [N, 10]
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        codec: Codec = "float32",
        compress: bool = False,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
        verify: bool | str | Path = True,
        num_classes: int | None = None,
    ) -> None:
        if codec not in CODECS:
            raise ServeError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.codec: Codec = codec
        self.compress = compress
        self.retries = retries
        self.backoff = backoff
        #: The width of every answer (None: not known here; then any width up to MAX_CLASSES).
        self.num_classes = num_classes
        # identity: an HTTP-compressed answer would be inflated by httpx before any limit applies.
        headers = {"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE, "accept-encoding": "identity"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        trust: ssl.SSLContext | bool
        if isinstance(verify, str | Path):  # a CA file to trust, e.g. a self-signed certificate
            trust = ssl.create_default_context(cafile=str(verify))
        else:
            trust = verify
        self._http = httpx.Client(headers=headers, timeout=timeout, verify=trust)

    def send(self, features: np.ndarray) -> np.ndarray:
        """The cloud's float32 logits ``[N, K]`` for ``features`` ``[N, ...]`` (salted ones for a salted model)."""
        body = encode_array(features, codec=self.codec, compress=self.compress)
        rows, columns = len(features), self.num_classes or MAX_CLASSES
        # float32 logits behind the longest header, plus zstd's worst-case growth had the server
        # compressed them: a bound the server's answer cannot push.
        limit = MAX_HEADER_BYTES + 4 * rows * columns * 101 // 100 + 1024
        content_type, answer = self._request("POST", "/v1/infer", limit, content=body)
        return self._logits(answer, content_type, rows)

    def info(self) -> dict[str, Any]:
        """The server's ``/v1/model`` description (feature shape, limits, codecs)."""
        _, body = self._request("GET", "/v1/model", _TEXT_LIMIT)
        try:
            description = json.loads(body)
        except ValueError:
            description = None
        if not isinstance(description, dict):
            raise ServeError(f"{self.url}/v1/model answered something other than a JSON object: {one_line(body)}")
        return description

    def _logits(self, answer: bytes, content_type: str, rows: int) -> np.ndarray:
        """The logits in ``answer`` to ``rows`` samples; a ``ServeError`` unless it is exactly that."""
        where = f"{self.url}/v1/infer"
        media_type = content_type.split(";")[0].strip().lower()  # media types are case-insensitive
        if media_type != MEDIA_TYPE:
            raise ServeError(f"{where} answered {media_type or 'no media type'!r}, not {MEDIA_TYPE}")
        try:
            header = read_header(answer)
        except WireFormatError as exc:
            raise ServeError(f"{where} answered a malformed body: {exc}") from None
        # The shape is checked before decode_array() sizes anything by it.
        width = self.num_classes
        shape = header.shape
        fits = shape[-1] == width if width else 1 <= shape[-1] <= MAX_CLASSES
        if len(shape) != 2 or shape[0] != rows or not fits:
            wanted = f"({rows}, {width})" if width else f"({rows}, K) with K <= {MAX_CLASSES}"
            raise ServeError(f"{where} answered logits of shape {shape}; {rows} samples need {wanted}")
        if header.codec != "float32":
            raise ServeError(f"{where} answered {header.codec} logits; the protocol answers float32")
        try:
            return decode_array(answer, header=header)
        except WireFormatError as exc:
            raise ServeError(f"{where} answered a malformed body: {exc}") from None

    def _request(self, method: str, path: str, limit: int, **kwargs: Any) -> tuple[str, bytes]:
        """``(content type, body)`` of a successful answer of at most ``limit`` bytes."""
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with self._http.stream(method, self.url + path, **kwargs) as response:
                    if response.status_code in _RETRYABLE_STATUS:
                        error = f"HTTP {response.status_code}: {self._detail(response)}"
                        continue
                    if not response.is_success:
                        status, detail = response.status_code, self._detail(response)
                        raise ServeError(f"{self.url}{path} refused the request (HTTP {status}): {detail}")
                    return response.headers.get("content-type", ""), self._read(response, path, limit)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
        raise ServeError(
            f"could not reach the cloud at {self.url} after {self.retries + 1} tries: {one_line(error, 300)}"
        )

    def _read(self, response: httpx.Response, path: str, limit: int, *, prefix: bool = False) -> bytes:
        """The body of ``response``, refused as soon as it is known to exceed ``limit`` bytes
        (``prefix``: its first ``limit`` bytes instead, for an explanation that may be cut short)."""
        where = f"{self.url}{path}"
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ServeError(f"{where} answered a {encoding!r}-encoded body; the client asked for identity")
        declared = response.headers.get("content-length", "")
        if not prefix and declared.isdigit() and int(declared) > limit:
            raise ServeError(f"{where} answered {declared} bytes; at most {limit} were expected")
        # httpx's timeout bounds each read; this bounds the whole body, so a server that drips a
        # byte at a time cannot hold the client for ever.
        deadline = time.monotonic() + self.timeout
        chunks, size = [], 0
        for chunk in response.iter_raw():
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                if prefix:
                    return b"".join(chunks)[:limit]
                raise ServeError(f"{where} answered more than the {limit} bytes expected")
            if time.monotonic() > deadline:
                raise ServeError(f"{where} took more than {self.timeout:g} s to send its answer")
        return b"".join(chunks)

    def _detail(self, response: httpx.Response) -> str:
        """The server's explanation of a refusal, as one line."""
        try:
            text = self._read(response, "", _TEXT_LIMIT, prefix=True)
        except ServeError as exc:
            return f"(no readable explanation: {exc})"
        try:
            detail = json.loads(text).get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        return one_line(detail)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def one_line(text: object, limit: int = 200) -> str:
    """``text`` as one printable line of at most ``limit`` characters (a server's words are not trusted)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    flat = " ".join(str(text).split())
    printable = "".join(c if c.isprintable() else "?" for c in flat)
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."
