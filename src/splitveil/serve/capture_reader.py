"""Reading capture files frame by frame: every whole frame, and an account of every damaged byte.

A reader never holds more than one frame in memory, so auditing a capture of any size costs the
features it keeps, not the file. It reads a capture and its rotated files (``cap.svcap``,
``cap.1.svcap``, ... see :class:`splitveil.serve.capture.CaptureWriter`) in the order they were written.

Damage is never skipped silently. In an SVCAP2 file a frame whose length or checksum is wrong is
skipped up to the next whole frame (found by its sync marker and checksums), and each skipped
stretch is reported as a :class:`CaptureDamage`: "torn tail" at the end of a file (the frame a
crash or a full disk cut short), "corrupt frame" in the middle. ``strict=True`` raises instead.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import torch

from splitveil.errors import WireFormatError
from splitveil.serve.capture_format import (
    HEADER,
    LENGTH_V1,
    MAGIC,
    MAGIC_SIZE,
    MAGIC_V1,
    SYNC,
    body_length,
    body_matches,
)
from splitveil.serve.codec import Header, decode, read_header

_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class Frame:
    """One whole frame of a capture file: where it starts and ends, and the request body it holds."""

    offset: int
    end: int
    body: bytes


@dataclass(frozen=True)
class CaptureDamage:
    """Bytes of a capture file that hold no whole frame, which a reader skipped."""

    path: Path
    offset: int
    size: int
    kind: Literal["torn tail", "corrupt frame"]

    def __str__(self) -> str:
        if self.kind == "torn tail":
            return (
                f"{self.path}: skipped a torn last frame ({self.size} bytes at byte {self.offset}), "
                "the request a crash or a full disk cut short; every whole frame before it was read"
            )
        return (
            f"{self.path}: skipped {self.size} corrupt bytes at byte {self.offset} (length or checksum wrong); "
            "the whole frames after them were read"
        )


def capture_files(path: str | Path) -> list[Path]:
    """The files of the capture started at ``path``, oldest first: ``path`` then its numbered rotations."""
    base = Path(path)
    if base.is_dir():
        raise WireFormatError(f"{base} is a directory; give the capture file, the path given to serve --capture")
    files = [file for _, file in capture_rotations(base)]
    if not files:
        raise WireFormatError(f"no capture file at {base}; start the server with --capture {base}")
    return files


def capture_rotations(base: Path) -> list[tuple[int, Path]]:
    """``(index, file)`` of each file of the capture at ``base`` that exists, by index (``base`` is 0)."""
    pattern = re.compile(re.escape(base.stem) + r"\.([1-9][0-9]*)" + re.escape(base.suffix) + "$")
    numbered = sorted(
        (int(match.group(1)), candidate)
        for candidate in base.parent.glob(f"{glob.escape(base.stem)}.*{glob.escape(base.suffix)}")
        if (match := pattern.match(candidate.name)) and candidate.is_file()
    )
    return ([(0, base)] if base.is_file() else []) + numbered


def scan_capture_file(path: Path) -> Iterator[Frame | CaptureDamage]:
    """The whole frames of one capture file, in order, with a :class:`CaptureDamage` for each gap."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise WireFormatError(f"cannot read capture file {path}: {exc.strerror}; check the path") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        magic = file.read(MAGIC_SIZE)
        if magic == MAGIC:
            yield from _scan_checked(file, path, size)
        elif magic == MAGIC_V1:
            yield from _scan_unchecked(file, path, size)
        elif MAGIC.startswith(magic):  # empty, or created by a process that died writing the magic line
            if magic:
                yield CaptureDamage(path, 0, size, "torn tail")
        else:
            raise WireFormatError(
                f"{path} is not a splitveil capture file (it does not start with {MAGIC!r} or {MAGIC_V1!r})"
            )


def _scan_checked(file: BinaryIO, path: Path, size: int) -> Iterator[Frame | CaptureDamage]:
    offset = MAGIC_SIZE
    while offset < size:
        if (frame := _frame_at(file, offset, size)) is not None:
            yield frame
            offset = frame.end
            continue
        following = _next_frame(file, offset + 1, size)
        if following is None:
            yield CaptureDamage(path, offset, size - offset, "torn tail")
            return
        yield CaptureDamage(path, offset, following - offset, "corrupt frame")
        offset = following


def _frame_at(file: BinaryIO, offset: int, size: int) -> Frame | None:
    """The whole, checksum-valid frame starting at ``offset``, if one does."""
    file.seek(offset)
    header = file.read(HEADER.size)
    length = body_length(header)
    if length is None or offset + HEADER.size + length > size:
        return None
    body = file.read(length)
    if len(body) != length or not body_matches(header, body):
        return None
    return Frame(offset, offset + HEADER.size + length, body)


def _next_frame(file: BinaryIO, start: int, size: int) -> int | None:
    """Where the first whole frame at or after ``start`` begins (found by its sync marker), if any."""
    position = start
    while position < size:
        file.seek(position)
        chunk = file.read(_SCAN_CHUNK)
        if not chunk:
            return None
        found = chunk.find(SYNC)
        while found != -1:
            if _frame_at(file, position + found, size) is not None:
                return position + found
            found = chunk.find(SYNC, found + 1)
        # Step back over a marker that may straddle the chunk's end.
        position += max(len(chunk) - len(SYNC) + 1, 1)
    return None


def _scan_unchecked(file: BinaryIO, path: Path, size: int) -> Iterator[Frame | CaptureDamage]:
    """SVCAP1: lengths without checksums, so only a frame running past the end can be seen to be torn."""
    offset = MAGIC_SIZE
    while offset < size:
        file.seek(offset)
        prefix = file.read(LENGTH_V1.size)
        if len(prefix) == LENGTH_V1.size:
            (length,) = LENGTH_V1.unpack(prefix)
            end = offset + LENGTH_V1.size + length
            if end <= size:
                yield Frame(offset, end, file.read(length))
                offset = end
                continue
        yield CaptureDamage(path, offset, size - offset, "torn tail")
        return


class CaptureReader:
    """The frames of a capture and its rotated files, streamed, with the damage met on the way.

    Example::

        reader = CaptureReader("wire.svcap")
        for features in reader.tensors():  # one request's (n, *feature_shape) tensor at a time
            ...
        for damage in reader.damage:
            print(damage)
    """

    def __init__(self, path: str | Path, *, strict: bool = False) -> None:
        self.path = Path(path)
        self.files = capture_files(self.path)
        self.strict = strict
        self.damage: list[CaptureDamage] = []

    def frames(self) -> Iterator[bytes]:
        """Every whole frame's request body, in arrival order."""
        for file in self.files:
            for item in scan_capture_file(file):
                if isinstance(item, CaptureDamage):
                    if self.strict:
                        raise WireFormatError(str(item))
                    self.damage.append(item)
                else:
                    yield item.body

    __iter__ = frames

    def headers(self) -> Iterator[Header]:
        """Every frame's wire header, without decoding a payload (a cheap count of the samples)."""
        for _, header, _ in self._checked_frames():
            yield header

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every frame decoded to float32 ``(n, *feature_shape)``; all frames must share one feature shape."""
        for index, header, body in self._checked_frames():
            try:
                yield decode(body, header=header)
            except WireFormatError as exc:
                raise WireFormatError(f"{self.path}: frame {index} is not a wire-format tensor ({exc})") from None

    def _checked_frames(self) -> Iterator[tuple[int, Header, bytes]]:
        """Each frame's index, parsed header and body; a frame that is no wire tensor, or whose feature
        shape differs from the first frame's, is a ``WireFormatError``."""
        shape: tuple[int, ...] | None = None
        for index, body in enumerate(self.frames()):
            try:
                header = read_header(body)
            except WireFormatError as exc:
                raise WireFormatError(f"{self.path}: frame {index} is not a wire-format tensor ({exc})") from None
            found = tuple(header.shape[1:])
            if shape is None:
                shape = found
            elif found != shape:
                raise WireFormatError(
                    f"{self.path} mixes feature shapes {shape} and {found} (frame {index}); capture one model per file"
                )
            yield index, header, body


def iter_capture(path: str | Path) -> Iterator[bytes]:
    """The request bodies recorded at ``path`` (and its rotated files), in arrival order; damage is warned about."""
    reader = CaptureReader(path)
    yield from reader.frames()
    _warn(reader.damage)


def read_capture(path: str | Path) -> torch.Tensor:
    """Every feature recorded at ``path`` as one float32 tensor ``(samples, *feature_shape)``."""
    reader = CaptureReader(path)
    tensors = list(reader.tensors())
    _warn(reader.damage)
    if not tensors:
        raise WireFormatError(f"{path} holds no captured requests yet")
    return torch.cat(tensors)


def _warn(damage: list[CaptureDamage]) -> None:
    for item in damage:
        warnings.warn(str(item), stacklevel=3)
