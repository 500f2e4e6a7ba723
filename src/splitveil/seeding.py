"""Seeded randomness that leaves the caller's random streams as they were, on every device.

``torch.random.fork_rng(devices=[])`` followed by ``torch.manual_seed`` forks only the CPU
generator but seeds every CUDA device too, so it silently overwrote a caller's CUDA stream. Every
seeded block in splitveil goes through :func:`seeded` instead: it forks the CPU generator and, when
CUDA is available, every CUDA device's, seeds them all, and restores them all on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def devices_in_use() -> list[int]:
    """The CUDA devices whose generators a seeded block must fork (none on a CPU-only machine)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextmanager
def seeded(seed: int | None = None) -> Iterator[None]:
    """Run the block on forked generators (CPU and every CUDA device), seeded with ``seed`` if given;
    the caller's generators are restored when the block ends, however it ends.

    Example:
        >>> import torch
        >>> with seeded(7):
        ...     a = torch.rand(2)
        >>> with seeded(7):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    with torch.random.fork_rng(devices=devices_in_use()):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def seed_process(seed: int) -> None:
    """Seed torch's global generators for the rest of the process: for a top-level command whose
    figures must reproduce (``splitveil attack`` draws a noisy edge's noise as a bench cell does).
    Library code never calls it; it runs its randomness in :func:`seeded` blocks."""
    torch.manual_seed(seed)  # seeds the CPU generator and every CUDA device's
