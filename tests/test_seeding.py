"""Seeded blocks: reproducible inside, the caller's streams untouched outside, every CUDA device forked."""

from __future__ import annotations

import pytest
import torch

from splitveil.seeding import devices_in_use, seeded


def test_a_seeded_block_is_reproducible_and_leaves_the_callers_stream_where_it_was():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(5):
        first = torch.rand(4)
    with pytest.raises(RuntimeError), seeded(5):
        second = torch.rand(4)
        raise RuntimeError("the stream is restored however the block ends")
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(3), expected_next)


def test_an_unseeded_block_only_forks():
    torch.manual_seed(9)
    expected = torch.rand(2)
    torch.manual_seed(9)
    with seeded():
        torch.rand(100)
    assert torch.equal(torch.rand(2), expected)


def test_every_cuda_device_is_forked_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices_in_use() == [0, 1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices_in_use() == []
