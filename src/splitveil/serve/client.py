"""The edge client: runs the edge half with its defense, sends the feature, decodes the answer.

The edge is exactly the module the bundle was evaluated with (noise, funnel, pruning, salt layers).
For a salted model the client draws a fresh secret salt per sample (the OS's CSPRNG by default, or a
:class:`~splitveil.salt.KeyedSalts` stream), sends only the salted feature, and decodes the cloud's
salted logits with the salt it kept.

Connection errors and 503s are retried with exponential backoff; any other refusal raises
:class:`~splitveil.errors.ServeError` with the server's explanation.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

from splitveil.errors import ServeError
from splitveil.salt.layer import SaltedEdge
from splitveil.salt.sources import SaltSource, SecretSalts
from splitveil.serve.bundle import load_half
from splitveil.serve.codec import MEDIA_TYPE, Codec, decode, encode

_RETRYABLE_STATUS = {502, 503, 504}


class EdgeClient:
    """Classify images through a remote cloud half.

    Example::

        with EdgeClient.from_bundle("deploy", "https://cloud:8443", token="...") as client:
            labels = client.predict(images)
    """

    def __init__(
        self,
        edge: nn.Module,
        url: str,
        *,
        token: str | None = None,
        codec: Codec = "float32",
        compress: bool = False,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
        verify: bool | str | Path = True,
        salts: SaltSource | None = None,
    ) -> None:
        self.edge = edge.eval()
        self.url = url.rstrip("/")
        self.codec: Codec = codec
        self.compress = compress
        self.retries = retries
        self.backoff = backoff
        if isinstance(edge, SaltedEdge):
            self.salts: SaltSource | None = salts or SecretSalts(edge.code.num_salts)
        elif salts is not None:
            raise ValueError("salts were given, but this edge is not salted")
        else:
            self.salts = None
        headers = {"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if isinstance(verify, str | Path):  # a CA file to trust, e.g. a self-signed certificate
            verify = ssl.create_default_context(cafile=str(verify))
        self._http = httpx.Client(headers=headers, timeout=timeout, verify=verify)

    @classmethod
    def from_bundle(cls, bundle: str | Path, url: str, **options: Any) -> EdgeClient:
        """A client running the edge half of the bundle at ``bundle``."""
        return cls(load_half(bundle, "edge").module, url, **options)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, salt)``: the edge's output for ``images`` and the salts it used (None if unsalted)."""
        with torch.inference_mode():
            if self.salts is None:
                return self.edge(images), None
            salt = self.salts.draw(len(images))
            return self.edge(images, salt), salt

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits over the true classes for ``images`` (N, C, H, W), computed across the network."""
        z, salt = self.features(images)
        answer = self.send(z)
        if salt is not None:
            return self.edge.code.decode_logits(answer, salt)  # type: ignore[union-attr]
        return answer

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The predicted class of each image."""
        return self.logits(images).argmax(dim=1)

    def send(self, z: torch.Tensor) -> torch.Tensor:
        """Send an already computed feature ``z``; the cloud's logits (salted ones for a salted model)."""
        body = encode(z, codec=self.codec, compress=self.compress)
        response = self._post("/v1/infer", body)
        return decode(response.content)

    def info(self) -> dict[str, Any]:
        """The server's ``/v1/model`` description (feature shape, limits, codecs)."""
        return self._request("GET", "/v1/model").json()

    def _post(self, path: str, body: bytes) -> httpx.Response:
        return self._request("POST", path, content=body)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in _RETRYABLE_STATUS:
                error = f"HTTP {response.status_code}: {_detail(response)}"
                continue
            if response.is_success:
                return response
            raise ServeError(f"{self.url}{path} refused the request (HTTP {response.status_code}): {_detail(response)}")
        raise ServeError(f"could not reach the cloud at {self.url} after {self.retries + 1} tries: {error}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
