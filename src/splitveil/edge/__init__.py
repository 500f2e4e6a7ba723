"""The edge half on a device without torch: an exported ``edge.onnx`` run by ONNX Runtime.

``pip install 'splitveil[edge]'`` installs this package with numpy, onnxruntime, httpx, zstandard
and imageio, and no torch: a phone or a board runs the deployed edge, defense included, and talks
to the cloud with the toolkit's wire format, TLS, auth and retries:

    >>> from splitveil.edge import EdgeClient                        # doctest: +SKIP
    >>> with EdgeClient.from_bundle("bundle", "https://cloud:8443", token=token) as client:  # doctest: +SKIP
    ...     labels = client.predict(images)                           # doctest: +SKIP

Names are imported lazily: the toolkit's ONNX export reads :mod:`splitveil.edge.runtime` without
needing the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitveil.edge.client import EdgeClient
    from splitveil.edge.connection import CloudConnection
    from splitveil.edge.images import read_image_files
    from splitveil.edge.runtime import OnnxEdge, read_onnx_metadata, secure_session

_EXPORTS = {
    "EdgeClient": "splitveil.edge.client",
    "CloudConnection": "splitveil.edge.connection",
    "read_image_files": "splitveil.edge.images",
    "OnnxEdge": "splitveil.edge.runtime",
    "read_onnx_metadata": "splitveil.edge.runtime",
    "secure_session": "splitveil.edge.runtime",
}

__all__ = ["CloudConnection", "EdgeClient", "OnnxEdge", "read_image_files", "read_onnx_metadata", "secure_session"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'splitveil.edge' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
