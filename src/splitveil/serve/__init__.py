"""Serving a split for real: the wire format, the cloud server, the edge client, capture files.

The server needs the ``serve`` extra (``pip install 'splitveil[serve]'``); the codec and bundles do not.
Names are imported lazily, so that importing :mod:`splitveil.serve.codec` (which a device without
torch uses through :mod:`splitveil.edge`) does not import the torch halves of this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitveil.serve.bundle import LoadedHalf, export_bundle, load_half
    from splitveil.serve.capture import CaptureWriter, iter_capture, read_capture
    from splitveil.serve.codec import CODECS, MEDIA_TYPE, WIRE_VERSION, Codec, decode, encode, read_header

_EXPORTS = {
    "LoadedHalf": "splitveil.serve.bundle",
    "export_bundle": "splitveil.serve.bundle",
    "load_half": "splitveil.serve.bundle",
    "CaptureWriter": "splitveil.serve.capture",
    "iter_capture": "splitveil.serve.capture",
    "read_capture": "splitveil.serve.capture",
    "CODECS": "splitveil.serve.codec",
    "MEDIA_TYPE": "splitveil.serve.codec",
    "WIRE_VERSION": "splitveil.serve.codec",
    "Codec": "splitveil.serve.codec",
    "decode": "splitveil.serve.codec",
    "encode": "splitveil.serve.codec",
    "read_header": "splitveil.serve.codec",
}

__all__ = [
    "CODECS",
    "MEDIA_TYPE",
    "WIRE_VERSION",
    "CaptureWriter",
    "Codec",
    "LoadedHalf",
    "decode",
    "encode",
    "export_bundle",
    "iter_capture",
    "load_half",
    "read_capture",
    "read_header",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'splitveil.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
