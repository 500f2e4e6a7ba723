"""The prior image: the auxiliary data's best single image, the floor under every cell's strongest attack."""

from __future__ import annotations

import torch

from splitveil.attacks import ATTACKS, Capability, PriorImageAttack, create_attack
from splitveil.metrics import ssim

from .conftest import labelled, smooth_images, tiny_split, view_of


def test_the_prior_image_is_a_real_attack_that_needs_only_auxiliary_data():
    assert not ATTACKS.get("prior-image").oracle
    assert PriorImageAttack.requires == {Capability.AUX_DATA}


def test_the_mse_prior_is_the_auxiliary_mean_and_the_ssim_one_never_loses_to_it_on_held_out_images():
    aux = labelled(smooth_images(400, seed=5))
    split = tiny_split()
    view = view_of(split, PriorImageAttack.requires, aux=aux)
    features = split.edge(smooth_images(6, seed=11)).detach()
    mean = aux.images.mean(dim=0, keepdim=True)
    mean_prior = create_attack("prior-image", view, metric="mse", progress=False).fit().invert(features)
    assert torch.allclose(mean_prior, mean.expand_as(mean_prior))

    for seed in range(3):
        attack = create_attack("prior-image", view, steps=100, samples=150, seed=seed, progress=False).fit()
        reconstruction = attack.invert(features)
        assert torch.equal(reconstruction[0], reconstruction[5])  # the same image whatever the feature
        assert 0 <= reconstruction.min() and reconstruction.max() <= 1
        held_out = aux.images[torch.randperm(400, generator=torch.Generator().manual_seed(seed))[150:300]]
        chosen, baseline = (float(ssim(image.expand_as(held_out), held_out)) for image in (attack.image, mean))
        assert chosen >= baseline - 1e-6  # tuned on one sample, kept only if it wins on another
