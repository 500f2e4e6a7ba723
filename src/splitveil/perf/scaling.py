"""How the local executor scales: the same spec run with 1, 2, ... workers, side by side, from scratch.

Each run gets a fresh run directory and a fresh checkpoint cache, so every one of them trains the
model and computes every cell: the wall times compare the whole job, not what a cache left over.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from splitveil.checkpoint import CheckpointCache
from splitveil.config import ExperimentSpec


@dataclass(frozen=True)
class ScalingPoint:
    workers: int
    threads: int  # torch threads per worker
    seconds: float
    rows: int


def time_workers(
    spec: ExperimentSpec, configurations: list[tuple[int, int | None]], *, progress: bool = False
) -> list[ScalingPoint]:
    """Wall time of a cold run of ``spec`` for each ``(workers, threads per worker)``, one after the other
    (threads None: the executor's default, one)."""
    from splitveil.bench.run import run_bench

    points = []
    for count, threads in configurations:
        with tempfile.TemporaryDirectory(prefix=f"splitveil-scaling-{count}-") as scratch:
            started = time.perf_counter()
            rows = run_bench(
                spec, Path(scratch) / "run", cache=CheckpointCache(Path(scratch) / "cache"), progress=progress,
                workers=count, threads=threads,
            )  # fmt: skip
            used = threads or 1
            points.append(ScalingPoint(count, used, time.perf_counter() - started, len(rows)))
    return points
