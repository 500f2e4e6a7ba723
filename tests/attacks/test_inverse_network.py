from __future__ import annotations

import torch

from splitveil.attacks import Capability, InverseNetworkAttack, NoiseQueryInverseNetworkAttack

from .conftest import labelled, smooth_images, tiny_split, view_of


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).square().mean().item()


def test_inverse_network_beats_the_grey_baseline_on_a_shallow_edge():
    split = tiny_split("conv11")  # linear: 4 random 3x3 filters
    aux = labelled(smooth_images(320, seed=11))
    targets = smooth_images(32, seed=12)
    view = view_of(split, InverseNetworkAttack.requires, aux=aux)
    attack = InverseNetworkAttack(view, epochs=4, batch_size=32, lr=3e-3, width=16, progress=False).fit()
    reconstruction = attack.invert(split.edge(targets).detach())
    grey = _mse(torch.full_like(targets, 0.5), targets)
    assert _mse(reconstruction, targets) < 0.3 * grey
    assert attack.history[-1] < attack.history[0]


def test_noise_queries_need_no_aux_data_and_train():
    split = tiny_split("relu12")
    view = view_of(split, {Capability.EDGE_QUERIES})
    attack = NoiseQueryInverseNetworkAttack(
        view, num_queries=128, epochs=3, batch_size=32, lr=3e-3, width=8, progress=False
    ).fit()
    assert attack.history[-1] < attack.history[0]
    out = attack.invert(split.edge(smooth_images(2)).detach())
    assert out.shape == (2, 1, 12, 12)


def test_invert_before_fit_says_what_to_do():
    view = view_of(tiny_split(), InverseNetworkAttack.requires)
    attack = InverseNetworkAttack(view, progress=False)
    try:
        attack.invert(torch.zeros(1, 8, 6, 6))
    except RuntimeError as error:
        assert "fit()" in str(error)
    else:
        raise AssertionError("invert() before fit() should fail")
