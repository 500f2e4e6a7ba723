"""The served cloud half from ``cloud.onnx`` (``splitveil serve --runtime onnx``), run by ONNX Runtime.

``cloud.onnx`` lies beside the bundle's ``edge/`` and ``cloud/`` (``splitveil export --onnx``). The
server still advertises what the bundle's ``cloud/meta.json`` says, so the ONNX file is trusted no
more than the bundle: before it serves, it must

1. carry the cloud half's metadata, equal to ``cloud/meta.json`` in every field (a file exported
   from another deployment, or left over from an earlier export, disagrees somewhere);
2. take one float32 ``feature`` of the bundle's feature shape with a free batch axis (the batcher
   sends batches of any size) and give one output;
3. compute the torch cloud half's logits, at a batch of one and of three, on probe features.

A salted model's cloud graph answers salted logits, as its torch half does: the salt never reaches
the cloud, in either runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from splitveil.edge.runtime import CLOUD_FILE, read_onnx_metadata
from splitveil.errors import CheckpointError
from splitveil.seeding import seeded
from splitveil.serve.bundle import LoadedHalf
from splitveil.serve.cloud_runtime import CloudRuntime

if TYPE_CHECKING:
    import onnxruntime

#: Largest |ONNX - torch| on the probe features, as a share of the largest logit (at least 1). Export
#: verified the graph within 1e-5 on real features; the probe only has to catch a graph of other
#: weights, whose logits differ in the first digits, so it allows for random features' larger logits.
PROBE_TOLERANCE = 1e-4
#: Batch sizes of the probe: a lone request, and a batch the export's parity run did not use.
PROBE_BATCHES = (1, 3)
_FIX = "export both again with `splitveil export --onnx`"


class OnnxCloudForward:
    """``cloud.onnx``'s forward pass over torch tensors, as the micro-batcher calls a cloud half."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        # The decoded features are float32 and contiguous already: this is a view, not a copy.
        array = np.ascontiguousarray(features.numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)


def cloud_onnx_path(checkpoint: str | Path) -> Path:
    """Where ``cloud.onnx`` lies for the bundle at ``checkpoint`` (the bundle directory or its ``cloud/``)."""
    path = Path(checkpoint)
    half_directory = path / "cloud" if (path / "cloud").is_dir() else path
    return half_directory.parent / CLOUD_FILE


def onnx_runtime(checkpoint: str | Path, half: LoadedHalf, *, threads: int = 1) -> CloudRuntime:
    """The runtime computing the bundle's cloud half with ``cloud.onnx`` on ``threads`` intra-op threads.

    ``half`` is the bundle's torch cloud half, loaded and checked: the graph is checked against it
    (see the module's docstring), then it is no longer needed. CheckpointError names what is wrong.
    """
    ort = _onnxruntime()
    path = cloud_onnx_path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"the bundle at {checkpoint} has no {CLOUD_FILE} ({path} does not exist); export it with "
            "`splitveil export --onnx`, or serve the torch half (--runtime torch)"
        )
    _check_metadata(path, read_onnx_metadata(path), half.metadata)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads would otherwise spin waiting for work, taking the cores the event loop
    # needs to read the next requests; with one thread there are none, and this changes nothing.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    _check_signature(path, session, half.feature_shape)
    forward = OnnxCloudForward(session)
    _check_probe(path, forward, half)
    return CloudRuntime("onnx", forward, half.metadata)


def _check_metadata(path: Path, found: dict[str, Any], bundle: dict[str, Any]) -> None:
    if found.get("half") != "cloud":
        raise CheckpointError(f"{path} holds the {found.get('half')!r} half; the server runs the cloud's; {_FIX}")
    differing = sorted(key for key, value in bundle.items() if found.get(key) != value)
    if differing:
        raise CheckpointError(
            f"{path} was exported from another deployment than the bundle beside it: its metadata differs from "
            f"cloud/meta.json in {', '.join(differing)}; {_FIX}"
        )


def _check_signature(path: Path, session: onnxruntime.InferenceSession, feature_shape: tuple[int, ...]) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        names = [i.name for i in inputs], [o.name for o in outputs]
        raise CheckpointError(f"{path} takes {names[0]} and gives {names[1]}, not one feature and its logits; {_FIX}")
    given, shape = inputs[0], list(inputs[0].shape)
    expected = ", ".join(map(str, feature_shape))
    if given.type != "tensor(float)" or shape[1:] != list(feature_shape):
        raise CheckpointError(
            f"{path} takes {given.type} of shape {shape}, not the bundle's float32 feature (batch, {expected}); {_FIX}"
        )
    if isinstance(shape[0], int):  # a symbolic dimension is a name (or None), a fixed one a number
        raise CheckpointError(
            f"{path} takes batches of exactly {shape[0]} samples, but the server batches requests of any size; {_FIX}"
        )


def _check_probe(path: Path, forward: OnnxCloudForward, half: LoadedHalf) -> None:
    """On features drawn from a fixed seed (non-negative, as ReLU features are), the graph computes
    the torch half's logits; the caller's random streams untouched."""
    probe = torch.rand((max(PROBE_BATCHES), *half.feature_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), seeded():
        expected = half.module(probe)
    for batch in PROBE_BATCHES:
        try:
            got = forward(probe[:batch])
        except Exception as error:  # noqa: BLE001 (ONNX Runtime raises its own classes)
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise CheckpointError(f"{path} fails on a batch of {batch} ({first_line}); {_FIX}") from None
        wanted = expected[:batch]
        if got.shape != wanted.shape:
            raise CheckpointError(
                f"{path} turns {batch} features into logits of shape {list(got.shape)}, not {list(wanted.shape)}; {_FIX}"
            )
        gap = float((got - wanted).abs().max())
        scale = max(1.0, float(wanted.abs().max()))
        if not gap <= PROBE_TOLERANCE * scale:
            raise CheckpointError(
                f"{path} computes other logits than the bundle's cloud half (up to {gap:.3g} apart on probe "
                f"features); it is stale or from another export: {_FIX}"
            )


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError("serving cloud.onnx needs onnxruntime: pip install 'splitveil[onnx]'") from None
    return onnxruntime
