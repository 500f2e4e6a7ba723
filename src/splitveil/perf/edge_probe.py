"""One edge runtime, measured alone in its own process: latency at batch 1, peak memory, features.

:mod:`splitveil.perf.edge_runtimes` runs ``python -m splitveil.perf.edge_probe JOB.json`` once per
runtime, so that no runtime's libraries, arenas or caches count in another's peak memory: the
process of an ONNX edge never imports torch, as on a device. The job (JSON) names the runtime, the
file it runs (the bundle for ``torch``, an ``.onnx`` for ``onnx``), the ``.npy`` of test images and
where to write their features (and salts); the figures come back as one JSON line on stdout.

Both runtimes run on one thread and are called as a device calls them: ``DeviceSide`` over the
bundle's edge half (``splitveil.serve.client``'s path) and :class:`~splitveil.edge.OnnxEdge`, each
drawing its own salt for a salted edge and its own noise for a noised one.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Images per call when the features for the accuracy are computed (after the latency is measured).
FEATURE_BATCH = 256

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Time ``job["latency_images"]`` single-image calls after ``job["warmup"]`` untimed ones; the peak
    memory is read right after, before the batched feature pass (whose buffers a device at batch 1
    never holds)."""
    before = peak_rss_bytes()
    encode = _runtime(job["runtime"], Path(job["path"]))
    # Mapped, not loaded: a whole test split would otherwise count in every runtime's peak memory.
    images = np.load(job["images"], mmap_mode="r")
    count = min(job["latency_images"], len(images))
    for index in range(min(job["warmup"], count)):
        encode(np.array(images[index : index + 1]))
    latencies = []
    for index in range(count):
        image = np.array(images[index : index + 1])  # in memory before the clock starts, as a camera's frame
        start = time.perf_counter_ns()
        encode(image)
        latencies.append(time.perf_counter_ns() - start)
    peak = peak_rss_bytes()
    if job["features"] is not None:
        _write_features(encode, images, job)
    return {"latency_ns": latencies, "peak_rss_bytes": peak, "rss_before_runtime_bytes": before}


def _write_features(encode: Encode, images: np.ndarray, job: dict[str, Any]) -> None:
    """Every image's feature (and salt) into ``.npy`` files, a batch at a time: the features of a whole
    test split can take hundreds of megabytes, so they are written in place rather than gathered."""
    features = salts = None
    for start in range(0, len(images), FEATURE_BATCH):
        batch, batch_salts = encode(np.array(images[start : start + FEATURE_BATCH]))
        if features is None:
            shape = (len(images), *batch.shape[1:])
            features = np.lib.format.open_memmap(job["features"], mode="w+", dtype=batch.dtype, shape=shape)
        features[start : start + len(batch)] = batch
        if batch_salts is not None:
            salts = np.empty(len(images), dtype=np.int64) if salts is None else salts
            salts[start : start + len(batch)] = batch_salts
    if features is not None:
        features.flush()
    if salts is not None:
        np.save(job["salts"], salts)


def peak_rss_bytes() -> int:
    """This process's peak resident set so far.

    Linux's ``VmHWM`` first: ``getrusage``'s ``ru_maxrss`` keeps the peak of the memory the process
    had before it exec'd, a copy of the parent's, so every child would report the parent's size.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, others KiB


def _runtime(name: str, path: Path) -> Encode:
    if name == "torch":
        return _torch_edge(path)
    if name == "onnx":
        from splitveil.edge.runtime import OnnxEdge

        return OnnxEdge(path, threads=1).features
    raise ValueError(f"unknown edge runtime {name!r}; the probe runs torch or onnx")


def _torch_edge(bundle: Path) -> Encode:
    import torch

    from splitveil.client_side import DeviceSide
    from splitveil.serve.bundle import load_half

    torch.set_num_threads(1)
    device = DeviceSide(load_half(bundle, "edge").module.eval(), secure=True)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            features, salts = device.encode(torch.from_numpy(images))
        return features.numpy(), None if salts is None else salts.numpy()

    return encode


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(Path(sys.argv[1]).read_text()))))
