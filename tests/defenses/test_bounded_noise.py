"""Calibrated noise on a bounded bottleneck: the signal's scale is fixed, so the noise's relative size is too."""

from __future__ import annotations

import pytest
import torch

from splitveil.blocks.bounded_noise import BoundedNoise
from splitveil.defenses import create_defense
from splitveil.errors import ConfigError

from .conftest import images, tiny_split


def _rms(z: torch.Tensor) -> torch.Tensor:
    return z.pow(2).flatten(1).mean(dim=1).sqrt()


@pytest.mark.parametrize("law", ["gaussian", "laplace"])
@pytest.mark.parametrize("mode", ["normalize", "clip"])
@pytest.mark.parametrize("relative_std", [0.25, 1.0, 3.0])
def test_the_noise_std_relative_to_the_bound_is_the_configured_one_within_5_percent(law, mode, relative_std):
    block = BoundedNoise(bound=2.5, relative_std=relative_std, mode=mode, law=law)
    z = torch.randn(64, 8, 7, 7) * 40  # far above the bound: both modes scale it down to it
    torch.manual_seed(0)
    noise = block(z) - block.bounded(z)
    measured = float(noise.std() / block.bound)
    assert measured == pytest.approx(relative_std, rel=0.05)
    assert abs(float(noise.mean())) < 0.05 * relative_std * block.bound


def test_normalizing_fixes_each_sample_s_scale_whatever_the_model_makes_it():
    block = BoundedNoise(bound=1.5, relative_std=0.0)
    z = torch.randn(5, 4, 6, 6)
    assert torch.allclose(_rms(block(z)), torch.full((5,), 1.5))
    assert torch.allclose(block(z * 1000), block(z), atol=1e-5)  # scaling the feature up buys nothing


def test_clipping_leaves_small_features_alone_and_caps_large_ones():
    block = BoundedNoise(bound=1.0, relative_std=0.0, mode="clip")
    small, large = torch.randn(3, 10) * 0.01, torch.randn(3, 10) * 50
    assert torch.allclose(block(small), small)
    assert torch.allclose(_rms(block(large)), torch.ones(3))


def test_a_zero_feature_stays_zero_and_finite():
    assert torch.equal(BoundedNoise(bound=1.0, relative_std=0.0)(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_the_deployed_edge_is_bounded_then_noised():
    split = create_defense("bounded-noise", strength=0.5, bound=2.0).apply(tiny_split()).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        z = split.edge(images(16))
    assert float(_rms(z).mean()) == pytest.approx((2.0**2 + (0.5 * 2.0) ** 2) ** 0.5, rel=0.1)  # signal ⊕ noise


@pytest.mark.parametrize(
    ("options", "message"),
    [({"bound": 0}, "bound=0 is invalid: it must be > 0"), ({"mode": "squash"}, "mode='squash' is invalid: choose one of"),
     ({"law": "uniform"}, "law='uniform' is invalid: choose one of")],
)  # fmt: skip
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        create_defense("bounded-noise", strength=0.5, **options)
