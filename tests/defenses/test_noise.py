from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from splitveil.defenses import GaussianNoise, LaplaceNoise, create_defense
from splitveil.errors import ConfigError
from splitveil.split import SplitModel

DRAWS = 200_000


def draws(module: nn.Module, *, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return module(torch.zeros(DRAWS))


def test_gaussian_noise_has_std_sigma_and_mean_zero() -> None:
    noise = draws(GaussianNoise(0.5))
    assert noise.std().item() == pytest.approx(0.5, rel=0.05)
    assert abs(noise.mean().item()) < 0.01


def test_laplace_noise_has_mean_absolute_value_b_and_mean_zero() -> None:
    noise = draws(LaplaceNoise(0.5))
    assert noise.abs().mean().item() == pytest.approx(0.5, rel=0.05)  # E|ε| = b
    assert noise.std().item() == pytest.approx(math.sqrt(2) * 0.5, rel=0.05)
    assert abs(noise.mean().item()) < 0.01
    assert torch.isfinite(noise).all()


@pytest.mark.parametrize("module", [GaussianNoise(0.3), LaplaceNoise(0.3)])
def test_noise_is_active_in_eval_mode_and_fresh_on_every_call(module: nn.Module) -> None:
    module.eval()
    x = torch.zeros(100)
    first, second = module(x), module(x)
    assert not torch.equal(first, x) and not torch.equal(first, second)


@pytest.mark.parametrize("module", [GaussianNoise(0.3), LaplaceNoise(0.3)])
def test_noise_comes_from_the_seeded_global_generator(module: nn.Module) -> None:
    assert torch.equal(draws(module, seed=3), draws(module, seed=3))


@pytest.mark.parametrize("module", [GaussianNoise(0.0), LaplaceNoise(0.0)])
def test_zero_noise_is_the_identity_and_draws_nothing(module: nn.Module) -> None:
    x = torch.rand(10)
    state = torch.get_rng_state()
    assert module(x) is x
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("module", [GaussianNoise, LaplaceNoise])
def test_negative_noise_scale_is_rejected(module: type[nn.Module]) -> None:
    with pytest.raises(ValueError):
        module(-1.0)


class Recorder(nn.Module):
    """An identity edge that remembers what it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x


@pytest.mark.parametrize("name", ["gaussian-noise", "laplace-noise"])
def test_feature_noise_is_added_after_the_edge(name: str) -> None:
    edge = Recorder()
    split = create_defense(name, strength=0.5).apply(SplitModel(edge, nn.Identity())).eval()
    x = torch.zeros(2, 1, 4, 4)
    z = split.edge(x)
    assert torch.equal(edge.seen, x) and not torch.equal(z, x)


@pytest.mark.parametrize("name", ["gaussian-noise", "laplace-noise"])
def test_input_noise_is_added_before_the_edge_and_not_clamped(name: str) -> None:
    edge = Recorder()
    split = create_defense(name, strength=0.5, where="input").apply(SplitModel(edge, nn.Identity())).eval()
    x = torch.zeros(4, 1, 8, 8)
    z = split.edge(x)
    assert torch.equal(z, edge.seen)  # nothing after the edge
    assert z.min() < 0  # noisy pixels leave [0, 1]: the input is deliberately not clamped


def test_where_is_validated() -> None:
    with pytest.raises(ConfigError, match="where"):
        create_defense("gaussian-noise", strength=1, where="output")
