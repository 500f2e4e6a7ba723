"""The bytes of a capture file: a magic line, then self-checking frames.

``SVCAP2`` (written now)::

    b"SVCAP2\\n"
    frame*:  SYNC (4 bytes) | u32 body length | u32 crc32(body) | u32 crc32(the 12 bytes before) | body

Why each field: the length lets a reader step from frame to frame without parsing bodies; the body
checksum catches a frame that was cut short or overwritten; the header checksum means a corrupt
length is never believed (it would send the reader past good frames); and the sync marker lets a
reader that met a corrupt frame find the next whole one instead of giving up on the rest of the
file. A body is one request exactly as it crossed the network (:mod:`splitveil.serve.codec`).

``SVCAP1`` (read only): ``b"SVCAP1\\n"`` then ``u32 length | body`` frames, with no checksums, so a
damaged frame cannot be told from a good one and nothing after it can be found again.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MAGIC = b"SVCAP2\n"
MAGIC_V1 = b"SVCAP1\n"
MAGIC_SIZE = len(MAGIC)  # both versions' magic lines are this long
SYNC = b"\xf5SVF"
HEADER = struct.Struct("<4sIII")
LENGTH_V1 = struct.Struct("<I")
MAX_BODY = 2**32 - 1  # what the u32 length can say


def frame_header(body: bytes) -> bytes:
    """The 16 bytes that precede ``body`` in an SVCAP2 file."""
    fields = struct.pack("<4sII", SYNC, len(body), zlib.crc32(body))
    return fields + struct.pack("<I", zlib.crc32(fields))


def body_length(header: bytes) -> int | None:
    """The body length a header announces, or None when it is not a whole, checksum-valid header."""
    if len(header) != HEADER.size:
        return None
    sync, length, _, header_crc = HEADER.unpack(header)
    if sync != SYNC or zlib.crc32(header[:12]) != header_crc:
        return None
    return length


def body_matches(header: bytes, body: bytes) -> bool:
    """Whether ``body`` is the one ``header`` (a valid header) was written for."""
    return zlib.crc32(body) == HEADER.unpack(header)[2]


def rotated_path(base: Path, index: int) -> Path:
    """File ``index`` of a rotated capture: ``cap.svcap``, ``cap.1.svcap``, ``cap.2.svcap``, ..."""
    return base if index == 0 else base.with_name(f"{base.stem}.{index}{base.suffix}")
