"""Capture files: the feature tensors a server received, byte for byte, for audits.

A capture is ``MAGIC`` followed by frames of ``u32 length`` + one request body in the wire format
(:mod:`splitveil.serve.codec`), exactly as it crossed the network — an int8 request is audited as
the int8 tensor the cloud saw. Frames are appended and flushed one at a time, so a server killed
mid-write leaves at most one truncated last frame, which :func:`read_capture` reports and skips.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from splitveil.errors import WireFormatError
from splitveil.serve.codec import decode

MAGIC = b"SVCAP1\n"
_LENGTH = struct.Struct("<I")


class CaptureWriter:
    """Appends request bodies to ``path`` (created with its magic line if new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            with self.path.open("rb") as existing:
                if existing.read(len(MAGIC)) != MAGIC:
                    raise WireFormatError(f"{self.path} exists and is not a capture file; choose another path")
        self._file: BinaryIO = self.path.open("ab")
        if fresh:
            self._file.write(MAGIC)
            self._file.flush()
        self.frames = 0

    def write(self, body: bytes) -> None:
        self._file.write(_LENGTH.pack(len(body)) + body)
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        self._file.close()


def iter_capture(path: str | Path) -> Iterator[bytes]:
    """The request bodies recorded in ``path``, in arrival order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WireFormatError(f"no capture file at {path}; start the server with --capture {path}") from None
    if not data.startswith(MAGIC):
        raise WireFormatError(f"{path} is not a splitveil capture file (it does not start with {MAGIC!r})")
    offset = len(MAGIC)
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            break
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + _LENGTH.size
        if start + length > len(data):
            break
        yield data[start : start + length]
        offset = start + length
    if offset < len(data):
        warnings.warn(f"{path}: skipped a truncated last frame ({len(data) - offset} bytes)", stacklevel=2)


def read_capture(path: str | Path) -> torch.Tensor:
    """Every feature recorded in ``path`` as one float32 tensor ``(samples, *feature_shape)``."""
    tensors = [decode(body) for body in iter_capture(path)]
    if not tensors:
        raise WireFormatError(f"{path} holds no captured requests yet")
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        raise WireFormatError(f"{path} mixes feature shapes {sorted(shapes)}; capture one model per file")
    return torch.cat(tensors)
