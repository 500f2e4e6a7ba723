"""Serving a split for real: the wire format, the cloud server, the edge client, capture files.

The server needs the ``serve`` extra (``pip install 'splitveil[serve]'``); the codec and bundles do not.
"""

from splitveil.serve.bundle import LoadedHalf, export_bundle, load_half
from splitveil.serve.capture import CaptureWriter, iter_capture, read_capture
from splitveil.serve.codec import CODECS, MEDIA_TYPE, WIRE_VERSION, Codec, decode, encode, read_header

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
