"""The edge client without torch: ``edge.onnx`` on ONNX Runtime, the feature sent to the cloud.

The same API as the toolkit's :class:`splitveil.serve.client.EdgeClient`, on numpy arrays: the
defense runs inside the exported graph (its noise seeded from the OS's CSPRNG), a salted edge's
salts are drawn on the device and only used to decode the answer, and the network half is the one
:class:`~splitveil.edge.connection.CloudConnection` both clients share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Unpack

import numpy as np

from splitveil.edge.connection import CloudConnection, ConnectionOptions
from splitveil.edge.runtime import EDGE_FILE, OnnxEdge
from splitveil.errors import CheckpointError


def edge_file(path: str | Path) -> Path:
    """The ONNX edge at ``path``: the file itself, or ``edge.onnx`` in a bundle directory."""
    path = Path(path)
    if path.is_dir():
        path = path / EDGE_FILE
        if not path.is_file():
            raise CheckpointError(f"{path.parent} has no {EDGE_FILE}; export the bundle with `splitveil export --onnx`")
    elif not path.is_file():
        raise CheckpointError(f"{path} does not exist; give a bundle directory or its {EDGE_FILE}")
    return path


class EdgeClient:
    """Classify images through a remote cloud half, the edge run by ONNX Runtime.

    Example::

        with EdgeClient.from_bundle("deploy", "https://cloud:8443", token="...") as client:
            labels = client.predict(images)  # images: float32 [N, C, H, W] in [0, 1]
    """

    def __init__(
        self,
        edge: OnnxEdge,
        url: str,
        *,
        num_classes: int | None = None,
        **connection: Unpack[ConnectionOptions],
    ) -> None:
        self.edge = edge
        num_classes = num_classes if num_classes is not None else edge.metadata.get("num_classes")
        #: The network half, shared with the torch client.
        self.cloud = CloudConnection(url, num_classes=num_classes, **connection)
        self.url = self.cloud.url
        self.num_classes = num_classes

    @classmethod
    def from_bundle(cls, bundle: str | Path, url: str, *, threads: int = 1, **options: Any) -> EdgeClient:
        """A client running ``edge.onnx`` of the bundle at ``bundle`` (or the ONNX edge file ``bundle``)
        on ``threads`` ONNX Runtime threads."""
        return cls(OnnxEdge(edge_file(bundle), threads=threads), url, **options)

    @property
    def class_names(self) -> list[str]:
        """The name of each class, as the bundle recorded them."""
        names = self.edge.metadata.get("class_names")
        return list(names) if names else [str(label) for label in range(self.num_classes or 0)]

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(z, salts)``: the edge's output for ``images`` and the secrets it used (None if it keeps none)."""
        return self.edge.features(images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits over the true classes for ``images`` (N, C, H, W), computed across the network."""
        z, salts = self.features(images)
        return self.edge.decode(self.send(z), salts)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The predicted class of each image."""
        return self.logits(images).argmax(axis=1)

    def send(self, z: np.ndarray) -> np.ndarray:
        """Send an already computed feature ``z``; the cloud's logits (salted ones for a salted model)."""
        return self.cloud.send(z)

    def info(self) -> dict[str, Any]:
        """The server's ``/v1/model`` description (feature shape, limits, codecs)."""
        return self.cloud.info()

    def close(self) -> None:
        self.cloud.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
