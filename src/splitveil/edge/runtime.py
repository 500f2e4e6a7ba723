"""Running an exported edge: a securely seeded ONNX Runtime session, the salt kept on the device.

:class:`OnnxEdge` reads what :func:`splitveil.serve.onnx_export.export_onnx` wrote into the file
(``splitveil`` metadata): the input shape it checks images against, whether the graph takes a salt,
and, for a salted edge, the salt code's table, with which it decodes the cloud's answer. Nothing here
imports torch.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitveil.errors import CheckpointError, ServeError

if TYPE_CHECKING:
    import onnxruntime

METADATA_KEY = "splitveil"
#: The files ``splitveil export --onnx`` writes beside a bundle.
EDGE_FILE, CLOUD_FILE = "edge.onnx", "cloud.onnx"


def secure_session(path: str | Path | bytes, *, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session whose random ops are seeded from the operating system's CSPRNG.

    ONNX Runtime seeds random ops without a ``seed`` attribute from one process-wide seed; seeding it
    with 63 secret bits before the session is made means the cloud cannot replay the noise stream.
    """
    ort = _onnxruntime()
    ort.set_seed(secrets.randbits(63))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``splitveil`` metadata an exported half carries (CheckpointError if it has none)."""
    ort = _onnxruntime()
    try:
        properties = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as error:  # noqa: BLE001 (ONNX Runtime raises its own classes for a file it cannot read)
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not an ONNX model ONNX Runtime can load ({first_line})") from None
    text = properties.custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise CheckpointError(f"{path}: no splitveil metadata; export it with `splitveil export --onnx`")
    return dict(json.loads(text))


class OnnxEdge:
    """The edge half from ``edge.onnx``: images in, the feature to send (and the salts kept) out."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        self.metadata = read_onnx_metadata(path)
        if self.metadata.get("half") != "edge":
            raise CheckpointError(f"{path} is the {self.metadata.get('half')!r} half; the device runs edge.onnx")
        self.session = secure_session(path, threads=threads)
        self.input_shape = tuple(self.metadata["input_shape"])
        salt = self.metadata.get("salt")
        self._table = None if salt is None else np.asarray(salt["table"], dtype=np.int64)

    @property
    def salted(self) -> bool:
        """Whether the edge takes a secret salt per image (the cloud's answer must be decoded with it)."""
        return self._table is not None

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The feature of each image ``[N, C, H, W]`` (float32 in [0, 1]), and the salts drawn for them."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ServeError(
                f"expected images of shape [N, {', '.join(map(str, self.input_shape))}], got {images.shape}"
            )
        feeds = {"image": images}
        salts = None
        if self._table is not None:
            # Drawn from the CSPRNG per image: the salt is the device's secret and never leaves it.
            salts = np.array([secrets.randbelow(len(self._table)) for _ in range(len(images))], dtype=np.int64)
            feeds["salt"] = salts
        return np.asarray(self.session.run(None, feeds)[0]), salts

    def decode(self, answer: np.ndarray, salts: np.ndarray | None) -> np.ndarray:
        """The cloud's logits over the true classes: ``answer`` itself, or decoded with the salts kept."""
        if self._table is None:
            return answer
        if salts is None or salts.shape != (len(answer),):
            raise ServeError("a salted edge's answer needs the salt of every image it was computed for")
        return np.take_along_axis(answer, self._table[salts], axis=1)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError("running an ONNX edge needs onnxruntime: pip install 'splitveil[onnx]'") from None
    return onnxruntime
