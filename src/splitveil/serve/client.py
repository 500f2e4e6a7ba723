"""The edge client: runs the edge half with its defense, sends the feature, decodes the answer.

The edge is exactly the module the bundle was evaluated with (noise, funnel, pruning, salt layers).
Its noise and dropout blocks draw from the operating system's CSPRNG (``noise="secure"``, see
:mod:`splitveil.blocks.noise_source`). For a salted model the client draws a fresh secret salt per sample (the OS's CSPRNG by default, or a
:class:`~splitveil.salt.KeyedSalts` stream), sends only the salted feature, and decodes the cloud's
salted logits with the salt it kept.

The network half (retries, limits, and not trusting the server's answer) is
:class:`~splitveil.edge.connection.CloudConnection`, which the torch-free
:class:`splitveil.edge.EdgeClient` shares: both send the same bytes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import nn

from splitveil.blocks.noise_source import NoiseSource, use_noise_source
from splitveil.client_side import DeviceSide
from splitveil.edge.connection import CloudConnection, ConnectionOptions
from splitveil.salt.sources import SaltSource
from splitveil.serve.bundle import load_half


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
        salts: SaltSource | None = None,
        num_classes: int | None = None,
        noise: NoiseSource = "secure",
        **connection: Unpack[ConnectionOptions],
    ) -> None:
        # Its own copy: the noise source and eval mode set here must not change the caller's module
        # (an audit of the same split depends on its seeded, global noise).
        self.edge = copy.deepcopy(edge).eval()
        # The edge's noise, dropout masks and attention noise are drawn as a device must: by default
        # from the OS's CSPRNG, fresh per call, so the cloud can neither predict nor replay them.
        use_noise_source(self.edge, noise)
        #: The device's side of the edge: a secret per sample (a salted model's salt) and decoding.
        self.device = DeviceSide(self.edge, salts, secure=True)
        num_classes = num_classes if num_classes is not None else self.device.num_classes
        #: The network half, shared with the torch-free client.
        self.cloud = CloudConnection(url, num_classes=num_classes, **connection)
        self.url = self.cloud.url
        #: The width of every answer (None: not known here; then any width up to MAX_CLASSES).
        self.num_classes = num_classes

    @classmethod
    def from_bundle(cls, bundle: str | Path, url: str, **options: Any) -> EdgeClient:
        """A client running the edge half of the bundle at ``bundle``."""
        edge = load_half(bundle, "edge")
        return cls(edge.module, url, **{"num_classes": edge.metadata["num_classes"], **options})

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, salt)``: the edge's output for ``images`` and the secrets it used (None if it keeps none)."""
        with torch.inference_mode():
            return self.device.encode(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits over the true classes for ``images`` (N, C, H, W), computed across the network."""
        z, secret = self.features(images)
        return self.device.decode(self.send(z), secret)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The predicted class of each image."""
        return self.logits(images).argmax(dim=1)

    def send(self, z: torch.Tensor) -> torch.Tensor:
        """Send an already computed feature ``z``; the cloud's logits (salted ones for a salted model)."""
        return torch.from_numpy(self.cloud.send(z.detach().to("cpu", torch.float32).numpy()))

    def info(self) -> dict[str, Any]:
        """The server's ``/v1/model`` description (feature shape, limits, codecs)."""
        return self.cloud.info()

    def close(self) -> None:
        self.cloud.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
