"""Tiny fixtures shared by the suite: no network, no big data."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from splitveil.checkpoint import CheckpointCache
from splitveil.data import DatasetSplits, ImageSet
from splitveil.serve.process import free_port

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


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray head started on loopback (`ray start --head`, token authentication), shared by the session's
    tests and stopped at its end. One per module failed: after joining and leaving the first head, the
    test process dialled the second head's port at another address (Ray 2.60) and could not join."""
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # the head and this driver
    command = [str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
               "--include-dashboard", "false", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=120)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
