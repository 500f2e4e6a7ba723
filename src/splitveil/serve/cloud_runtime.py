"""What computes the served cloud half: torch (the bundle's ``cloud/``) or ONNX Runtime (``cloud.onnx``).

The server sees a :class:`CloudRuntime`: a forward pass (a batch of features in, logits out, torch
tensors on both sides, as the micro-batcher hands them over) and the bundle's cloud metadata, from
which it advertises the feature shape, the classes and its limits. Neither the batcher nor the routes
know which runtime computes, so the wire format, batching, limits, auth, capture, metrics and refusals
are one code path for both, and ``/v1/model`` answers the same whichever runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from splitveil.serve.bundle import LoadedHalf, load_half

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx")

CloudForward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CloudRuntime:
    """The cloud half as the server runs it: ``forward`` computes, ``metadata`` is the bundle's ``cloud/meta.json``."""

    name: str
    forward: CloudForward
    metadata: dict[str, Any]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one sample's feature (what crosses the wire), without the batch axis."""
        return tuple(self.metadata["feature_shape"])


def torch_runtime(half: LoadedHalf) -> CloudRuntime:
    """The bundle's torch cloud half as a runtime."""
    return CloudRuntime("torch", half.module, half.metadata)


def as_runtime(cloud: LoadedHalf | CloudRuntime) -> CloudRuntime:
    """``cloud`` itself if it is a runtime already; a loaded torch half runs as the torch runtime."""
    return cloud if isinstance(cloud, CloudRuntime) else torch_runtime(cloud)


def load_cloud_runtime(checkpoint: str | Path, runtime: Runtime = "torch", *, threads: int = 1) -> CloudRuntime:
    """The cloud half of the bundle at ``checkpoint`` (the bundle directory or its ``cloud/``), computed by ``runtime``.

    Both runtimes load and check the torch half first: its metadata is what the server advertises,
    and the ONNX graph is checked against it (:func:`splitveil.serve.onnx_cloud.onnx_runtime`).
    ``threads`` is ONNX Runtime's intra-op thread count; torch's is the process's (``torch.set_num_threads``).
    """
    half = load_half(checkpoint, "cloud")
    if runtime == "torch":
        return torch_runtime(half)
    if runtime == "onnx":
        from splitveil.serve.onnx_cloud import onnx_runtime  # onnxruntime only when asked for

        return onnx_runtime(checkpoint, half, threads=threads)
    raise ValueError(f"unknown cloud runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
