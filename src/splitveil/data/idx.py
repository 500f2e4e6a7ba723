"""Reader for IDX files, the binary format of MNIST and Fashion-MNIST.

Layout: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
dimension, then the values (big-endian) in C order. Files may be gzipped (detected by content,
not by name). A damaged download is a common failure, so every check names the file and what was
wrong instead of surfacing a numpy reshape error.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from splitveil.errors import ConfigError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class IdxFormatError(ConfigError):
    """An IDX file is corrupt, truncated or not an IDX file at all."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the (optionally gzipped) IDX file at ``path``, in native byte order."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxFormatError(f"{path}: damaged gzip data ({err}); re-download the file") from None
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes; ``source`` names the data in error messages."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise IdxFormatError(
            f"{source}: not an IDX file (bad magic number {raw[:4].hex() or 'missing'}); "
            "expected 0x000008xx-style header"
        )
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{source}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise IdxFormatError(f"{source}: IDX file {problem}: shape {shape} needs {expected} data bytes, found {actual}")
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)
