"""Tiny fixtures shared by the suite: no network, no big data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from splitveil.checkpoint import CheckpointCache
from splitveil.data import DatasetSplits, ImageSet

# A user's own package, registering components when imported: tests/test_plugins.py imports it in its
# subprocesses only, so the doctest collector must not import it into this process's registries.
collect_ignore = ["plugins"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one intra-op thread. Its tensors are tiny, and when another job competes for the
    two cores, OpenMP threads waiting for each other make every op tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_global_rng() -> Iterator[None]:
    """Every test starts from the same global RNG state and hands the next one its own, so no result
    depends on which tests ran before (layers initialised from torch's global generator, noise)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _blobs(count: int, generator: torch.Generator, *, num_classes: int = 3) -> ImageSet:
    """Images whose mean brightness encodes the class, so a small model can learn them quickly."""
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    noise = torch.rand(count, 1, 12, 12, generator=generator) * 0.3
    images = (noise + labels.view(-1, 1, 1, 1) * 0.3).clamp(0, 1)
    return ImageSet(images=images, labels=labels)


@pytest.fixture
def tiny_data() -> DatasetSplits:
    generator = torch.Generator().manual_seed(0)
    return DatasetSplits(
        name="blobs",
        train=_blobs(96, generator),
        val=_blobs(32, generator),
        test=_blobs(32, generator),
        aux=_blobs(32, generator),
        num_classes=3,
        class_names=("dark", "mid", "bright"),
        seed=0,
    )


@pytest.fixture
def cache(tmp_path) -> CheckpointCache:
    return CheckpointCache(tmp_path / "cache")
