"""The wire format: one tensor in a binary body, behind a small fixed header.

Layout (little-endian)::

    magic  b"SVT"   3 bytes   "splitveil tensor"
    version         u8        WIRE_VERSION; a reader refuses versions it does not know
    codec           u8        0 float32, 1 float16, 2 int8 (8-bit affine, per channel)
    flags           u8        bit 0: the payload is zstd-compressed
    ndim            u8        1..MAX_NDIM
    shape           ndim x u32
    payload         the elements (if flagged: one zstd frame of them, with nothing after it)

The header stays uncompressed, so a server checks the shape against its model *before* it
decompresses or allocates anything, and decompresses into exactly the size the shape implies (a
compressed body cannot expand beyond it, and a frame that declares another size is refused unread).
A payload of several zstd frames is refused rather than joined: the encoder writes one, and a
reader that joined frames would have to bound their sum as well.

The int8 codec quantises each channel of each sample to 256 levels between its own minimum and
maximum: the payload is ``min`` and ``step`` as float16 for every (sample, channel), then one byte
per element. (Version 1 sent them as float32: 8 bytes per channel cost a seventh of a 7x7 map.)
The minimum is rounded down and the step up to the nearest float16, so the levels still span the
channel's range. "Channel" is axis 1 of an ``N, C, ...`` tensor; a flat ``N, F`` feature is one channel
per sample. Per-channel ranges matter because feature maps differ in scale by orders of magnitude.
The error of an element is at most half a step.

The codec works on numpy arrays (:func:`encode_array`, :func:`decode_array`), so a device without
torch speaks it too; :func:`encode` and :func:`decode` are the torch tensor forms.

Example:
    >>> import torch
    >>> z = torch.rand(2, 3, 4, 4)
    >>> torch.equal(decode(encode(z)), z)
    True
    >>> len(encode(z, codec="int8")) < len(encode(z)) / 3
    True
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from splitveil.errors import WireFormatError

if TYPE_CHECKING:
    import torch

Codec = Literal["float32", "float16", "int8"]
CODECS: tuple[Codec, ...] = get_args(Codec)
MAGIC = b"SVT"
WIRE_VERSION = 2
MAX_NDIM = 8
MEDIA_TYPE = "application/x-splitveil-tensor"
#: Classes a model may have; an edge client bounds every answer by it.
MAX_CLASSES = 1 << 16

_PREFIX = struct.Struct("<3sBBBB")
_CODEC_IDS: dict[Codec, int] = {"float32": 0, "float16": 1, "int8": 2}
_ZSTD_FLAG = 1
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame starts with these four bytes
_SKIPPABLE_MAGICS = frozenset(bytes([m, 0x2A, 0x4D, 0x18]) for m in range(0x50, 0x60))
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_SCALE_BYTES = 4  # int8: min and step as float16, per (sample, channel)
#: The longest header a body can have (a server sizes its body limit with it).
MAX_HEADER_BYTES = _PREFIX.size + 4 * MAX_NDIM


@dataclass(frozen=True)
class Header:
    """What a body's header says: enough to check a request before touching its payload."""

    codec: Codec
    compressed: bool
    shape: tuple[int, ...]
    size: int  # bytes of header

    @property
    def payload_bytes(self) -> int:
        """Bytes of the uncompressed payload this shape implies."""
        elements = prod(self.shape)
        if self.codec == "int8":
            return elements + _SCALE_BYTES * _quantised_rows(self.shape)
        return elements * (4 if self.codec == "float32" else 2)


def encode(tensor: torch.Tensor, *, codec: Codec = "float32", compress: bool = False, level: int = 3) -> bytes:
    """``tensor`` as a wire body (see the module docstring); ``compress`` adds zstd at ``level``."""
    return encode_array(_float32_array(tensor), codec=codec, compress=compress, level=level)


def encode_array(array: np.ndarray, *, codec: Codec = "float32", compress: bool = False, level: int = 3) -> bytes:
    """A numpy array as a wire body (what :func:`encode` sends for a tensor of the same values)."""
    if codec not in CODECS:
        raise WireFormatError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if not 1 <= array.ndim <= MAX_NDIM:
        raise WireFormatError(f"can only send tensors of 1 to {MAX_NDIM} dimensions, got shape {tuple(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise WireFormatError("the tensor holds NaN or infinite values; they cannot be encoded")
    payload = _quantise(array) if codec == "int8" else _raw(array, codec)
    flags = 0
    if compress:
        payload = _zstd().ZstdCompressor(level=level).compress(payload)
        flags |= _ZSTD_FLAG
    header = _PREFIX.pack(MAGIC, WIRE_VERSION, _CODEC_IDS[codec], flags, array.ndim)
    return header + struct.pack(f"<{array.ndim}I", *array.shape) + payload


def _float32_array(tensor: torch.Tensor) -> np.ndarray:
    # numpy rather than torch for the per-request checks: on a feature of a few thousand values a
    # torch call's dispatch costs more than its arithmetic, and a server makes several per request.
    # A contiguous CPU float32 tensor is shared, not copied: nothing below writes to it.
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        tensor = tensor.to("cpu", torch.float32)
    return np.ascontiguousarray(tensor.numpy())


def read_header(body: bytes) -> Header:
    """Parse and check the header of ``body``; ``WireFormatError`` says what is wrong."""
    if len(body) < _PREFIX.size:
        raise WireFormatError(f"body of {len(body)} bytes is shorter than the {_PREFIX.size}-byte header")
    magic, version, codec_id, flags, ndim = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise WireFormatError(f"not a splitveil tensor: the body starts with {magic!r}, expected {MAGIC!r}")
    if version != WIRE_VERSION:
        raise WireFormatError(f"wire format version {version} is not supported (this side speaks {WIRE_VERSION})")
    codecs = {number: name for name, number in _CODEC_IDS.items()}
    if codec_id not in codecs:
        raise WireFormatError(f"unknown codec id {codec_id}; known: {codecs}")
    if flags & ~_ZSTD_FLAG:
        raise WireFormatError(f"unknown header flags {flags:#04x}")
    if not 1 <= ndim <= MAX_NDIM:
        raise WireFormatError(f"ndim {ndim} is out of range 1..{MAX_NDIM}")
    end = _PREFIX.size + 4 * ndim
    if len(body) < end:
        raise WireFormatError(f"body of {len(body)} bytes ends inside the {end}-byte header")
    shape = struct.unpack_from(f"<{ndim}I", body, _PREFIX.size)
    return Header(codec=codecs[codec_id], compressed=bool(flags & _ZSTD_FLAG), shape=shape, size=end)


def decode(body: bytes, *, header: Header | None = None) -> torch.Tensor:
    """The float32 tensor in ``body``; every inconsistency is a ``WireFormatError``."""
    import torch

    return torch.from_numpy(decode_array(body, header=header))


def decode_array(body: bytes, *, header: Header | None = None) -> np.ndarray:
    """The float32 array in ``body`` (writable, owned); every inconsistency is a ``WireFormatError``."""
    header = header or read_header(body)
    payload: bytes | memoryview = memoryview(body)[header.size :]  # a view: the one copy is made below
    expected = header.payload_bytes
    if header.compressed:
        payload = _decompress(payload, expected)
    if len(payload) != expected:
        raise WireFormatError(
            f"payload is {len(payload)} bytes but shape {header.shape} as {header.codec} needs {expected}"
        )
    if header.codec == "int8":
        return _dequantise(payload, header.shape)
    dtype = np.float32 if header.codec == "float32" else np.float16
    values = np.frombuffer(payload, dtype=dtype).reshape(header.shape)  # read-only, on the body
    if not np.isfinite(values).all():
        raise WireFormatError("the tensor holds NaN or infinite values")
    return values.astype(np.float32)  # a writable float32 copy, off the body


def _raw(array: np.ndarray, codec: Codec) -> bytes:
    if codec == "float32":
        return array.tobytes()
    if array.size and np.abs(array).max() > _FLOAT16_MAX:
        raise WireFormatError("values exceed float16's range (65504); send float32 or int8")
    return array.astype(np.float16).tobytes()


def _quantised_rows(shape: tuple[int, ...]) -> int:
    return shape[0] * shape[1] if len(shape) >= 3 else (shape[0] if len(shape) == 2 else 1)


def _quantise(array: np.ndarray) -> bytes:
    count = _quantised_rows(tuple(array.shape))
    rows = array.reshape(count, array.size // count if count else 0)  # -1 is ambiguous for an empty batch
    if rows.size and np.abs(rows).max() > _FLOAT16_MAX:
        raise WireFormatError("values exceed float16's range (65504), which int8's scales use; send float32")
    empty = np.zeros(len(rows), dtype=np.float32)
    low = _float16_toward(rows.min(axis=1) if rows.size else empty, -math.inf)
    high = rows.max(axis=1) if rows.size else empty
    # Rounding low down and the step up keeps [low, low + 255 step] around every value of the row.
    step = _float16_toward((high - low.astype(np.float32)) / np.float32(255), math.inf)
    safe_step = np.where(step > 0, step.astype(np.float32), np.float32(1))
    scaled = (rows - low.astype(np.float32)[:, None]) / safe_step[:, None]
    levels = np.clip(np.round(scaled), 0, 255).astype(np.uint8)  # round half to even, as torch does
    return low.tobytes() + step.tobytes() + levels.tobytes()


def _float16_toward(values: np.ndarray, direction: float) -> np.ndarray:
    """``values`` as float16, rounded toward ``direction`` (-inf or +inf) where float16 cannot hold them."""
    rounded = values.astype(np.float16)
    overshoot = rounded.astype(np.float32) > values if direction < 0 else rounded.astype(np.float32) < values
    return np.where(overshoot, np.nextafter(rounded, np.float16(direction)), rounded)


def _dequantise(payload: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    rows = _quantised_rows(shape)
    if rows == 0:
        return np.zeros(shape, dtype=np.float32)
    scales = np.frombuffer(payload, dtype=np.float16, count=2 * rows).astype(np.float32)
    low, step = scales[:rows], scales[rows:]
    if not (np.isfinite(scales).all() and (step >= 0).all()):
        raise WireFormatError("int8 scales must be finite and non-negative")
    levels = np.frombuffer(payload, dtype=np.uint8, offset=_SCALE_BYTES * rows).reshape(rows, -1)
    values = low[:, None] + levels.astype(np.float32) * step[:, None]
    return np.asarray(values.reshape(shape), dtype=np.float32)


def _decompress(payload: bytes | memoryview, expected: int) -> bytes:
    """The one zstd frame in ``payload``, decompressed into at most ``expected`` bytes."""
    zstd = _zstd()
    try:
        declared = zstd.frame_content_size(payload)
    except zstd.ZstdError:
        raise WireFormatError("zstd payload does not start with a zstd frame header") from None
    # zstd decompresses a frame that declares its size into a buffer of that size, whatever
    # ``max_output_size`` says, so the declaration is checked first: a small body cannot make this
    # side allocate gigabytes. A frame that does not declare it (-1) is capped by ``max_output_size``.
    if declared > expected:
        raise WireFormatError(f"zstd frame declares {declared} bytes but the header's shape needs {expected}")
    decompressor = zstd.ZstdDecompressor()
    if declared in (-1, expected):
        try:
            return decompressor.decompress(payload, max_output_size=expected, allow_extra_data=False)
        except zstd.ZstdError as exc:
            if "unused data" not in str(exc):
                detail = f"zstd payload does not decompress into the {expected} bytes its shape needs: {exc}"
                raise WireFormatError(detail) from None
    raise WireFormatError(_why_not_one_frame(zstd, payload, declared, expected))


def _why_not_one_frame(zstd: Any, payload: bytes | memoryview, declared: int, expected: int) -> str:
    """Why a payload whose first frame fits in ``expected`` bytes is refused (it runs only to say so)."""
    # Decompressing the first frame again is bounded: it declared fewer bytes than ``expected``, or
    # it just decompressed within ``max_output_size`` before zstd noticed the bytes after it.
    first = zstd.ZstdDecompressor().decompressobj()
    try:
        first.decompress(payload)
    except zstd.ZstdError as exc:
        return f"zstd payload does not decompress: {exc}"
    after = first.unused_data
    if after[:4] == _ZSTD_MAGIC or after[:4] in _SKIPPABLE_MAGICS:
        return "zstd payload holds more than one frame; compress the whole payload as a single frame"
    if declared not in (-1, expected):
        return f"zstd frame declares {declared} bytes but the header's shape needs {expected}"
    return f"zstd payload has {len(after)} bytes after its frame; send the frame alone"


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise WireFormatError("zstd compression needs the serve extra: pip install 'splitveil[serve]'") from None
    return zstandard
