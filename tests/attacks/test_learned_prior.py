from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.attacks import (
    AttackerView,
    Capability,
    LearnedPriorAttack,
    WhiteBoxLearnedPriorAttack,
    create_attack,
)
from splitveil.attacks.generative import VAE, build_latent_encoder
from splitveil.attacks.rmle import relative_feature_error
from splitveil.errors import CapabilityError, ConfigError
from splitveil.split import SplitModel

from .conftest import INPUT_SHAPE, assert_unchanged, labelled, smooth_images, snapshot, tiny_split, view_of

#: Small enough for a second or two per fit on one thread.
TINY = {"latent_dim": 8, "vae_epochs": 2, "encoder_epochs": 2, "batch_size": 16, "width": 8, "progress": False}
ATTACKS = [LearnedPriorAttack, WhiteBoxLearnedPriorAttack]


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).square().mean().item()


def blob_images(count: int, *, seed: int) -> torch.Tensor:
    """A bright Gaussian blob (σ = 2 px) of random position and brightness on black: a three-parameter
    family a tiny VAE learns in seconds, dark background and bright object like Fashion-MNIST."""
    generator = torch.Generator().manual_seed(seed)
    _, height, width = INPUT_SHAPE
    centre = 2.5 + torch.rand(2, count, 1, 1, 1, generator=generator) * torch.tensor([height - 5.0, width - 5.0]).view(
        2, 1, 1, 1, 1
    )
    brightness = 0.6 + 0.4 * torch.rand(count, 1, 1, 1, generator=generator)
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    distance = (rows - centre[0]).square() + (cols - centre[1]).square()
    return (brightness * torch.exp(-distance / 8)).expand(count, *INPUT_SHAPE).contiguous()


#: Enough training for the blob family (a few seconds on one thread).
LEARNS = {**TINY, "vae_epochs": 30, "encoder_epochs": 15, "width": 16, "batch_size": 32}


@pytest.mark.parametrize(
    ("attack", "missing"),
    [
        (LearnedPriorAttack, Capability.EDGE_QUERIES),
        (LearnedPriorAttack, Capability.AUX_DATA),
        (WhiteBoxLearnedPriorAttack, Capability.EDGE_WEIGHTS),
        (WhiteBoxLearnedPriorAttack, Capability.AUX_DATA),
    ],
)
def test_a_view_without_a_required_capability_is_refused(attack, missing):
    view = view_of(tiny_split(), set(Capability) - {missing})
    with pytest.raises(CapabilityError, match=missing.value):
        attack(view, **TINY)


def test_the_black_box_attack_cannot_use_the_edge_weights():
    view = view_of(tiny_split(), LearnedPriorAttack.requires)
    attack = LearnedPriorAttack(view, **TINY).fit()
    with pytest.raises(CapabilityError):
        _ = attack.view.edge


@pytest.mark.parametrize(
    "options", [{"latent_dim": 0}, {"vae_epochs": 0}, {"width": -1}, {"beta": 0.0}, {"steps": 0}, {"prior_weight": -1}]
)
def test_bad_options_are_config_errors(options):
    view = view_of(tiny_split(), WhiteBoxLearnedPriorAttack.requires)
    with pytest.raises(ConfigError, match=next(iter(options))):
        create_attack("learned-prior-whitebox", view, **options)


@pytest.mark.parametrize("attack", ATTACKS)
def test_invert_before_fit_says_what_to_do(attack):
    view = view_of(tiny_split(), attack.requires)
    with pytest.raises(RuntimeError, match=r"fit\(\)"):
        attack(view, **TINY).invert(torch.zeros(1, 8, 6, 6))


@pytest.mark.parametrize("attack", ATTACKS)
def test_shape_range_and_seeded_determinism(attack):
    split = tiny_split()
    z = split.edge(smooth_images(4, seed=5)).detach()
    view = view_of(split, attack.requires)
    options = {**TINY, "steps": 10} if attack is WhiteBoxLearnedPriorAttack else TINY

    first = attack(view, seed=3, **options).fit().invert(z)
    assert first.shape == (4, *INPUT_SHAPE)
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, attack(view, seed=3, **options).fit().invert(z))
    assert not torch.equal(first, attack(view, seed=4, **options).fit().invert(z))


def test_the_vae_and_encoder_train():
    view = view_of(tiny_split(), LearnedPriorAttack.requires, aux=labelled(smooth_images(64, seed=2)))
    attack = LearnedPriorAttack(view, **{**TINY, "vae_epochs": 4, "encoder_epochs": 4}).fit()
    assert attack.vae_history[-1] < attack.vae_history[0]
    assert attack.encoder_history[-1] < attack.encoder_history[0]
    assert all(not p.requires_grad for p in attack.vae.parameters()), "the trained prior should be frozen"


def test_the_black_box_attack_learns_a_prior_on_an_identity_edge():
    view = AttackerView(
        capabilities=LearnedPriorAttack.requires,
        input_shape=INPUT_SHAPE,
        query=lambda x: x.clone(),
        aux=labelled(blob_images(256, seed=11)),
    )
    targets = blob_images(32, seed=12)
    reconstruction = LearnedPriorAttack(view, **LEARNS).fit().invert(targets)
    aux_mean = view.aux.images.mean(dim=0, keepdim=True).expand_as(targets)
    # Seeds 0-3 reach 0.23-0.29 of the aux mean's error; the mean image itself is 1.0.
    assert _mse(reconstruction, targets) < 0.5 * _mse(aux_mean, targets)


def test_the_latent_search_lowers_the_feature_error_from_the_encoders_start():
    split = tiny_split("relu12")
    z = split.edge(blob_images(4, seed=5)).detach()
    view = view_of(split, WhiteBoxLearnedPriorAttack.requires, aux=labelled(blob_images(256, seed=11)))
    attack = WhiteBoxLearnedPriorAttack(view, steps=40, **LEARNS).fit()
    with torch.no_grad():
        start = relative_feature_error(split.edge(attack.generate(attack.encode(z))), z)
    reconstruction = attack.invert(z)
    with torch.no_grad():
        end = relative_feature_error(split.edge(reconstruction), z)
    assert torch.allclose(start.mean(), torch.tensor(attack.search_history[0]), rtol=1e-4)
    assert (end <= start + 1e-6).all(), "the best w per image is never worse than the start"
    assert end.mean() < 0.9 * start.mean()


class _ModeRecorder(nn.Module):
    """A 1x1 convolution that records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.modes: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.add(self.training)
        return self.conv(x)


def test_the_white_box_attack_runs_the_edge_in_eval_mode_and_leaves_it_as_it_was():
    edge = _ModeRecorder().train()
    before = snapshot(edge)
    view = AttackerView(
        capabilities=WhiteBoxLearnedPriorAttack.requires,
        input_shape=INPUT_SHAPE,
        edge=edge,
        aux=labelled(smooth_images(32, seed=1)),
    )
    with torch.no_grad():
        z = edge.conv(smooth_images(2, seed=5))
    WhiteBoxLearnedPriorAttack(view, steps=5, **TINY).fit().invert(z)
    assert edge.modes == {False}
    assert edge.training
    assert_unchanged(edge, before)


@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 25, 25), (1, 28, 28), (2, 8, 13)])
def test_the_vae_maps_any_image_shape_to_itself(shape):
    vae = VAE(input_shape=shape, latent_dim=4, width=4)
    x = torch.rand(2, *shape)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 4)
    out = vae(x)
    assert out.shape == (2, *shape)
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("feature_shape", [(32, 14, 14), (8, 3, 3), (64, 1, 1), (16,), (4, 5)])
def test_the_latent_encoder_takes_any_feature_shape(feature_shape):
    encoder = build_latent_encoder(feature_shape, 6, width=4)
    assert encoder(torch.randn(3, *feature_shape)).shape == (3, 6)


class _NoisyEdge(nn.Module):
    def __init__(self, edge: nn.Module) -> None:
        super().__init__()
        self.edge = edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.edge(x)
        return z + torch.randn_like(z)


@pytest.mark.parametrize("noisy", [False, True])
def test_the_encoder_is_trained_noise_aware_on_a_stochastic_edge(noisy):
    split = tiny_split()
    if noisy:
        split = SplitModel(edge=_NoisyEdge(split.edge), cloud=split.cloud)
    view = view_of(split, LearnedPriorAttack.requires, aux=labelled(smooth_images(32, seed=2)))
    attack = LearnedPriorAttack(view, **TINY).fit()
    assert attack.stochastic_edge is noisy
    again = LearnedPriorAttack(view, **TINY).fit()
    z = split.edge(smooth_images(2, seed=6)).detach()
    assert torch.equal(attack.invert(z), again.invert(z))  # fresh draws, but seeded ones
