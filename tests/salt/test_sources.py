"""Salt sources: in range, uniform enough, reproducible exactly where they should be."""

from __future__ import annotations

import pytest
import torch

from splitveil.salt import KeyedSalts, SaltSource, SecretSalts, TorchSalts

SOURCES = {
    "torch": lambda n: TorchSalts(n),
    "secret": lambda n: SecretSalts(n),
    "keyed": lambda n: KeyedSalts(n, secret=b"k"),
}


@pytest.mark.parametrize("name", SOURCES)
def test_draws_lie_in_range_and_cover_every_salt(name: str) -> None:
    source = SOURCES[name](7)
    assert isinstance(source, SaltSource)
    salts = source.draw(7000)
    assert salts.dtype == torch.long and salts.shape == (7000,)
    counts = torch.bincount(salts, minlength=7)
    assert len(counts) == 7
    # Each salt near 1,000 (binomial std ≈ 29): a loose 6-sigma band.
    assert counts.min() > 820 and counts.max() < 1180


def test_torch_salts_follow_the_seeded_global_generator() -> None:
    torch.manual_seed(3)
    first = TorchSalts(10).draw(50)
    torch.manual_seed(3)
    assert torch.equal(TorchSalts(10).draw(50), first)


def test_keyed_salts_are_a_reproducible_stream_of_the_secret() -> None:
    client = KeyedSalts(10, secret="secret")
    first, second = client.draw(5), client.draw(5)
    replay = KeyedSalts(10, secret="secret").draw(10)
    assert torch.equal(torch.cat([first, second]), replay)
    assert [client.salt_of(i) for i in range(10)] == replay.tolist()
    assert not torch.equal(KeyedSalts(10, secret="other").draw(10), replay)


def test_secret_salts_differ_between_draws() -> None:
    source = SecretSalts(1000)
    assert not torch.equal(source.draw(64), source.draw(64))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_invalid_salt_counts_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="num_salts"):
        TorchSalts(bad)  # type: ignore[arg-type]


def test_a_keyed_source_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        KeyedSalts(10, secret="")
