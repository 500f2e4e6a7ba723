"""Where deployed randomness comes from: the global generator (reproducible), a given one, or a secure source."""

from __future__ import annotations

import pytest
import torch

from splitveil.blocks.noise_source import SILENT, randn_like, silence_noise, uniform_like, use_noise_source
from splitveil.defenses import create_defense
from splitveil.serve.client import EdgeClient

from .conftest import images, tiny_split


def test_the_global_source_draws_exactly_what_torch_s_own_calls_draw() -> None:
    x = torch.zeros(4, 5)
    torch.manual_seed(3)
    expected = torch.randn_like(x), torch.rand_like(x)
    torch.manual_seed(3)
    assert torch.equal(randn_like(x, None), expected[0]) and torch.equal(uniform_like(x, None), expected[1])


def test_a_given_generator_is_the_only_stream_used() -> None:
    x = torch.zeros(1000)
    first = randn_like(x, torch.Generator().manual_seed(1)), uniform_like(x, torch.Generator().manual_seed(1))
    torch.manual_seed(99)  # the global stream has nothing to do with it
    second = randn_like(x, torch.Generator().manual_seed(1)), uniform_like(x, torch.Generator().manual_seed(1))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_the_secure_source_cannot_be_replayed_by_seeding_and_has_the_right_law() -> None:
    x = torch.zeros(200_000)
    torch.manual_seed(0)
    first = randn_like(x, "secure")
    torch.manual_seed(0)
    second = randn_like(x, "secure")
    assert not torch.equal(first, second)
    assert abs(first.mean()) < 0.01 and abs(first.std() - 1) < 0.01
    uniform = uniform_like(x, "secure", -1, 1)
    assert uniform.min() >= -1 and uniform.max() < 1 and abs(uniform.mean()) < 0.01


def test_a_source_that_is_none_of_the_four_is_refused() -> None:
    with pytest.raises(ValueError, match="None, 'secure', 'silent' or a torch.Generator"):
        use_noise_source(torch.nn.Identity(), "urandom")  # type: ignore[arg-type]  # the wrong value is the test


@pytest.mark.parametrize(
    ("name", "strength"),
    [
        ("gaussian-noise", 0.5),
        ("laplace-noise", 0.5),
        ("feature-dropout", 0.5),
        ("pripro", 0.5),
        ("bounded-noise", 0.5),
    ],
)
def test_the_edge_client_draws_a_stochastic_edge_s_randomness_securely(name: str, strength: float) -> None:
    split = create_defense(name, strength=strength).apply(tiny_split()).eval()
    x = images(4)
    with EdgeClient(split.edge, "http://127.0.0.1:9") as device:  # features() sends nothing
        torch.manual_seed(0)
        first, _ = device.features(x)
        torch.manual_seed(0)
        second, _ = device.features(x)
    assert not torch.equal(first, second)  # seeding torch replays nothing a device sends
    with EdgeClient(split.edge, "http://127.0.0.1:9", noise=None) as audit:  # the audit's reproducible stream
        torch.manual_seed(0)
        first, _ = audit.features(x)
        torch.manual_seed(0)
        second, _ = audit.features(x)
    assert torch.equal(first, second)
    assert all(getattr(m, "noise_source", None) is None for m in split.edge.modules())  # the caller's edge is untouched
    assert use_noise_source(split.edge, None) >= 1


def test_a_silent_source_is_never_drawn_from() -> None:
    with pytest.raises(ValueError, match="silent noise source draws nothing"):
        randn_like(torch.zeros(3), SILENT)
    with pytest.raises(ValueError, match="silent noise source draws nothing"):
        uniform_like(torch.zeros(3), SILENT)


@pytest.mark.parametrize("name", ["gaussian-noise", "laplace-noise", "feature-dropout", "pripro", "bounded-noise"])
def test_silenced_noise_passes_the_feature_on_and_comes_back_when_restored(name: str) -> None:
    plain = tiny_split().eval()
    split = create_defense(name, strength=0.5).apply(tiny_split()).eval()
    x = images(4)
    restore = silence_noise(split)
    with torch.no_grad():
        quiet = split.edge(x), split.edge(x)
        without_noise = create_defense(name, strength=0.0).apply(plain).edge(x)
    assert torch.equal(quiet[0], quiet[1])  # nothing drawn
    if name != "bounded-noise":  # the bounded block still bounds: its silent output is the scaled feature
        assert torch.allclose(quiet[0], without_noise, atol=1e-6)
    restore()
    with torch.no_grad():
        assert not torch.equal(split.edge(x), split.edge(x))
