"""Fixtures of the metrics tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # These tests train small networks on a 2-core machine that may be busy with other jobs; with
    # one intra-op thread they cannot stall waiting for a second core (and stay deterministic).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
