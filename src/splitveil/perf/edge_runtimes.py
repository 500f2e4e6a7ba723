"""Torch edge vs ONNX float32 edge vs ONNX int8 edge, side by side for one deployed split.

What a device pays for each way of running the same edge half (defense included):

- latency per image at batch 1 on one thread, p50 and p99, as a device calls it;
- peak memory of a process that runs only that edge (each runtime in its own child process,
  :mod:`splitveil.perf.edge_probe`, so one's libraries never count in another's peak);
- the size of what is shipped: the edge half's safetensors in the bundle, or the ``.onnx`` file;
- accuracy end to end on the test split: that runtime's features into the torch cloud half, so
  that the only difference between rows is the edge.

Each row also gives its latency and size as a share of the ONNX float32 edge's, and its accuracy's
gap to it in points: the int8 row reads directly as what quantisation buys and costs.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitveil.checkpoint import CheckpointCache
from splitveil.client_side import SecretKeepingEdge
from splitveil.config import ExperimentSpec
from splitveil.edge.runtime import EDGE_FILE
from splitveil.errors import SplitveilError
from splitveil.serve.deployment import Deployment, deployment_from_spec
from splitveil.serve.onnx_quantize import INT8_EDGE_FILE

#: The runtimes compared, in table order, with the file each runs (None: the bundle's torch edge half).
RUNTIMES: dict[str, str | None] = {"torch": None, "onnx-fp32": EDGE_FILE, "onnx-int8": INT8_EDGE_FILE}
#: The row every ratio is taken against.
REFERENCE = "onnx-fp32"
FIGURES_FILE, TABLE_FILE = "edge-runtimes.json", "edge-runtimes.csv"
#: Features per call of the torch cloud half when the accuracy is measured.
CLOUD_BATCH = 512


@dataclass(frozen=True)
class EdgeBenchSettings:
    #: Single-image calls timed per runtime, split over ``rounds`` child processes that take turns
    #: with the other runtimes'; each process first makes ``warmup`` untimed calls.
    latency_images: int = 1000
    rounds: int = 3
    warmup: int = 100
    #: Test images the accuracy is measured on (None: the whole test split).
    accuracy_images: int | None = None
    #: Seconds one runtime's child process may take.
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class EdgeRuntimeFigures:
    """One runtime of one deployed split."""

    deployment: str
    cut: str
    defense: str
    strength: float
    runtime: str
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float
    #: The same process's peak before it loaded the runtime (Python, numpy): the part no runtime owes.
    rss_before_runtime_mib: float
    file_bytes: int
    accuracy: float
    accuracy_images: int
    latency_images: int
    #: Shares of the ONNX float32 edge's figure, and the accuracy's gap to it in points.
    latency_vs_fp32: float
    size_vs_fp32: float
    accuracy_vs_fp32_points: float


def run_edge_benchmark(
    spec: ExperimentSpec,
    cuts: list[str],
    out: str | Path,
    *,
    defense: str | None = None,
    strength: float | None = None,
    cache: CheckpointCache | None = None,
    settings: EdgeBenchSettings | None = None,
    progress: bool = False,
) -> list[EdgeRuntimeFigures]:
    """Every runtime of each cut of ``spec`` (defended by ``defense``), with bundles kept in
    ``out/bundles`` and the figures written to ``out/edge-runtimes.json`` and ``.csv``."""
    out = Path(out)
    settings = settings or EdgeBenchSettings()
    figures: list[EdgeRuntimeFigures] = []
    for cut_name in cuts:
        deployment = deployment_from_spec(
            spec, cut_name, defense=defense, strength=strength, cache=cache, progress=progress
        )
        figures += benchmark_edge_runtimes(deployment, out / "bundles" / _label(deployment), settings)
    write_edge_figures(figures, out, spec=spec, settings=settings)
    return figures


def benchmark_edge_runtimes(
    deployment: Deployment, bundle: str | Path, settings: EdgeBenchSettings
) -> list[EdgeRuntimeFigures]:
    """Export ``deployment`` to ``bundle`` (torch halves, edge.onnx, cloud.onnx, edge.int8.onnx) and
    measure each runtime of its edge."""
    bundle = Path(bundle)
    deployment.export(bundle)
    deployment.export_onnx(bundle)
    deployment.export_int8_edge(bundle)
    test = deployment.trained.data.test
    test = test if settings.accuracy_images is None else test.take(settings.accuracy_images)
    latencies: dict[str, list[int]] = {runtime: [] for runtime in RUNTIMES}
    peaks = dict.fromkeys(RUNTIMES, 0)
    before = dict.fromkeys(RUNTIMES, 0)
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="splitveil-edge-bench-") as directory:
        scratch = Path(directory)
        np.save(scratch / "images.npy", test.images.numpy())
        # The runtimes take turns, round after round, so that a change in the machine's load (a
        # background job) falls on all of them alike rather than on whichever ran then.
        for round_index in range(settings.rounds):
            for runtime, file in RUNTIMES.items():
                first = round_index == 0  # the features for the accuracy are computed once
                probe = _probe(runtime, _target(bundle, file), scratch, settings, features=first)
                latencies[runtime] += probe["latency_ns"]
                peaks[runtime] = max(peaks[runtime], probe["peak_rss_bytes"])
                before[runtime] = max(before[runtime], probe["rss_before_runtime_bytes"])
                if first:
                    accuracy[runtime] = _accuracy(deployment, scratch, test.labels)
    milliseconds = {runtime: np.asarray(times, dtype=np.float64) / 1e6 for runtime, times in latencies.items()}
    p50 = {runtime: float(np.percentile(times, 50)) for runtime, times in milliseconds.items()}
    sizes = {runtime: _shipped_bytes(_target(bundle, file)) for runtime, file in RUNTIMES.items()}
    return [
        EdgeRuntimeFigures(
            deployment=_label(deployment),
            cut=deployment.deployed.split.cut_name,
            defense=deployment.defense_spec.display_name if deployment.defense_spec else "none",
            strength=deployment.strength,
            runtime=runtime,
            p50_ms=p50[runtime],
            p99_ms=float(np.percentile(milliseconds[runtime], 99)),
            peak_rss_mib=peaks[runtime] / 2**20,
            rss_before_runtime_mib=before[runtime] / 2**20,
            file_bytes=sizes[runtime],
            accuracy=accuracy[runtime],
            accuracy_images=len(test),
            latency_images=len(latencies[runtime]),
            latency_vs_fp32=p50[runtime] / p50[REFERENCE],
            size_vs_fp32=sizes[runtime] / sizes[REFERENCE],
            accuracy_vs_fp32_points=100 * (accuracy[runtime] - accuracy[REFERENCE]),
        )
        for runtime in RUNTIMES
    ]


def edge_runtime_table(figures: list[EdgeRuntimeFigures]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for a rich or markdown table ("runtime MiB": the peak less what the process
    held before it loaded the runtime, Python and numpy)."""
    header = [
        "deployment",
        "runtime",
        "p50 ms",
        "p99 ms",
        "p50 / fp32",
        "peak MiB",
        "runtime MiB",
        "file KiB",
        "size / fp32",
        "accuracy",
        "vs fp32 (pts)",
    ]
    lines = [
        [
            row.deployment,
            row.runtime,
            f"{row.p50_ms:.3f}",
            f"{row.p99_ms:.3f}",
            f"{row.latency_vs_fp32:.2f}x",
            f"{row.peak_rss_mib:.0f}",
            f"{row.peak_rss_mib - row.rss_before_runtime_mib:.0f}",
            f"{row.file_bytes / 1024:.1f}",
            f"{row.size_vs_fp32:.2f}x",
            f"{row.accuracy:.4f}",
            f"{row.accuracy_vs_fp32_points:+.2f}",
        ]
        for row in figures
    ]
    return header, lines


def write_edge_figures(
    figures: list[EdgeRuntimeFigures], out: str | Path, *, spec: ExperimentSpec, settings: EdgeBenchSettings
) -> None:
    """``out/edge-runtimes.json`` (the rows with the settings and the machine) and ``out/edge-runtimes.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "torch": torch.__version__}
    document = {
        "spec": spec.name,
        "seed": spec.seed,
        "settings": asdict(settings),
        "machine": machine,
        "rows": [asdict(row) for row in figures],
    }
    (out / FIGURES_FILE).write_text(json.dumps(document, indent=2))
    with (out / TABLE_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(EdgeRuntimeFigures)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in figures)


def _target(bundle: Path, file: str | None) -> Path:
    return bundle if file is None else bundle / file


def _probe(runtime: str, target: Path, scratch: Path, settings: EdgeBenchSettings, *, features: bool) -> dict[str, Any]:
    """Run one edge in a child process (:mod:`splitveil.perf.edge_probe`) and read its figures; with
    ``features``, it also writes every test image's feature (and salt) to ``scratch``."""
    job = {
        "runtime": "torch" if RUNTIMES[runtime] is None else "onnx",
        "path": str(target),
        "images": str(scratch / "images.npy"),
        "features": str(scratch / "features.npy") if features else None,
        "salts": str(scratch / "salts.npy"),
        "latency_images": -(-settings.latency_images // settings.rounds),
        "warmup": settings.warmup,
    }
    (scratch / "salts.npy").unlink(missing_ok=True)
    (scratch / "job.json").write_text(json.dumps(job))
    # One thread for every library, set before the child starts: OpenMP reads it once, at load.
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "splitveil.perf.edge_probe", str(scratch / "job.json")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=settings.timeout_s, env=environment, check=False
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SplitveilError(f"measuring the {runtime} edge {target} failed: {last}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _accuracy(deployment: Deployment, scratch: Path, labels: torch.Tensor) -> float:
    """The features a probe wrote, through the torch cloud half (and decoded with its salts)."""
    split = deployment.deployed.split
    features = np.load(scratch / "features.npy", mmap_mode="r")  # a batch at a time: a split's can be large
    salts_file = scratch / "salts.npy"
    salts = torch.from_numpy(np.load(salts_file)) if salts_file.is_file() else None
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(features), CLOUD_BATCH):
            answer = split.cloud(torch.from_numpy(np.array(features[start : start + CLOUD_BATCH])))
            if salts is not None and isinstance(split.edge, SecretKeepingEdge):
                answer = split.edge.decode_answer(answer, salts[start : start + CLOUD_BATCH])
            predictions.append(answer.argmax(1))
    return int((torch.cat(predictions) == labels).sum()) / len(labels)


def _shipped_bytes(target: Path) -> int:
    """What a device is sent: the edge half's weights (safetensors) or the ONNX file."""
    if target.is_file():
        return target.stat().st_size
    return sum(path.stat().st_size for path in (target / "edge").glob("*.safetensors"))


def _label(deployment: Deployment) -> str:
    cut_name = deployment.deployed.split.cut_name
    if deployment.defense_spec is None:
        return cut_name
    return f"{cut_name}-{deployment.defense_spec.display_name}-{deployment.strength:g}"
