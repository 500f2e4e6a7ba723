"""How the server refuses a request: one exception and one bearer-token check for every route.

The FastAPI routes and the raw ASGI inference route (:mod:`splitveil.serve.infer_route`) both raise
:class:`Refusal`; the app's exception handler and the inference route turn it into the same JSON
``{"detail": ...}`` answer with the same status, headers and metrics reason. Authentication is one
call, :func:`authorize`, so no route can check tokens differently from another.
"""

from __future__ import annotations

import functools
import json

from splitveil.serve.auth import token_refusal


class Refusal(Exception):
    """A 4xx/5xx answer: the status, the metrics reason, the message the client reads, extra headers."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.headers = headers or {}

    @functools.cached_property
    def body(self) -> bytes:
        """The JSON body every refusal has (serialised once: the headers give its length)."""
        return json.dumps({"detail": self.detail}).encode()

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's headers as ASGI sends them (lower-case names), content type and length included."""
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        length = str(len(self.body)).encode()
        return [(b"content-type", b"application/json"), (b"content-length", length), *extra]


def authorize(header: str | None, tokens: frozenset[str] | None) -> None:
    """Raise a 401 :class:`Refusal` unless the ``Authorization`` header carries an accepted token."""
    detail = token_refusal(header, tokens)
    if detail is not None:
        raise Refusal(401, "auth", detail, {"WWW-Authenticate": "Bearer"})
