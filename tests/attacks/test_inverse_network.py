from __future__ import annotations

import pytest
import torch

from splitveil.attacks import Capability, InverseNetworkAttack, NoiseQueryInverseNetworkAttack
from splitveil.attacks.inverse_network import held_out_split, reconstruction_loss
from splitveil.errors import ConfigError
from splitveil.metrics import ssim
from splitveil.split import SplitModel

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


class _NoisyEdge(torch.nn.Module):
    """A deployed edge that adds fresh Gaussian noise at every call, counting the images it saw."""

    def __init__(self, edge: torch.nn.Module) -> None:
        super().__init__()
        self.edge, self.images_seen = edge, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(x)
        z = self.edge(x)
        return z + 0.5 * torch.randn_like(z)


def test_a_stochastic_edge_is_queried_afresh_draws_times_per_epoch():
    split = tiny_split("relu12")
    noisy = SplitModel(edge=_NoisyEdge(split.edge), cloud=split.cloud)
    aux = labelled(smooth_images(64, seed=3))
    view = view_of(noisy, InverseNetworkAttack.requires, aux=aux)
    attack = InverseNetworkAttack(view, epochs=2, draws=3, batch_size=16, width=8, progress=False).fit()
    assert attack.stochastic_edge
    probe, statistics = 2 * 16, 64  # is_stochastic's two probes, then one pass for the standardisation
    assert noisy.edge.images_seen == probe + statistics + 2 * 3 * 64


def test_a_deterministic_edge_is_queried_once():
    split = tiny_split("relu12")
    counting = SplitModel(edge=_Counting(split.edge), cloud=split.cloud)
    aux = labelled(smooth_images(64, seed=3))
    attack = InverseNetworkAttack(
        view_of(counting, InverseNetworkAttack.requires, aux=aux), epochs=3, draws=3, batch_size=16, width=8,
        progress=False,
    ).fit()  # fmt: skip
    assert not attack.stochastic_edge
    assert counting.edge.images_seen == 2 * 16 + 64


class _Counting(torch.nn.Module):
    def __init__(self, edge: torch.nn.Module) -> None:
        super().__init__()
        self.edge, self.images_seen = edge, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(x)
        return self.edge(x)


def test_the_decoder_standardises_with_the_queries_statistics():
    split = tiny_split("relu12")
    aux = labelled(smooth_images(64, seed=3))
    view = view_of(split, InverseNetworkAttack.requires, aux=aux)
    attack = InverseNetworkAttack(view, epochs=1, batch_size=16, width=8, progress=False).fit()
    features = split.edge(aux.images).detach()
    scale = attack.decoder.scale
    assert torch.allclose(scale.mean.flatten(), features.mean(dim=(0, 2, 3)), atol=1e-6)
    standardised = scale(features)
    assert torch.allclose(standardised.mean(dim=(0, 2, 3)), torch.zeros(features.shape[1]), atol=1e-5)
    unscaled = InverseNetworkAttack(view, epochs=1, width=8, standardize=False, progress=False).fit()
    assert not hasattr(unscaled.decoder, "scale")


@pytest.mark.parametrize("loss", ["mse", "ssim"])
def test_both_reconstruction_losses_train(loss):
    split = tiny_split("conv11")
    aux = labelled(smooth_images(128, seed=11))
    view = view_of(split, InverseNetworkAttack.requires, aux=aux)
    attack = InverseNetworkAttack(view, epochs=3, batch_size=32, width=8, loss=loss, progress=False).fit()
    assert attack.history[-1] < attack.history[0]


def test_the_ssim_loss_is_mse_plus_one_minus_ssim():
    x = smooth_images(4, seed=1)
    x_hat = smooth_images(4, seed=2)
    expected = ((x_hat - x) ** 2).mean() + 1 - ssim(x_hat, x)
    assert torch.allclose(reconstruction_loss("ssim")(x_hat, x), expected)
    assert torch.allclose(reconstruction_loss("mse")(x_hat, x), ((x_hat - x) ** 2).mean())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("loss", "l1", "loss='l1'"), ("schedule", "step", "schedule='step'"), ("blocks", -1, "blocks=-1"),
     ("draws", 0, "draws=0"), ("precision", "fp16", "precision=.fp16.")],
)  # fmt: skip
def test_bad_options_are_config_errors(option, value, message):
    view = view_of(tiny_split(), InverseNetworkAttack.requires)
    with pytest.raises(ConfigError, match=message):
        InverseNetworkAttack(view, progress=False, **{option: value})


def test_restarts_keep_the_decoder_that_reconstructs_the_held_out_images_best():
    split = tiny_split("relu12")
    aux = labelled(smooth_images(80, seed=13))
    options = dict(epochs=2, batch_size=16, width=8, progress=False)
    attack = InverseNetworkAttack(view_of(split, InverseNetworkAttack.requires, aux=aux), restarts=3, **options).fit()
    assert len(attack.restart_scores) == 3 and len(set(attack.restart_scores)) == 3  # three initialisations
    # The kept decoder is the best-scoring one: re-scoring it on the held-out images gives the maximum.
    _, held_out = held_out_split(aux.images, attack.seed)
    with torch.no_grad():
        kept = ssim(attack.invert(split.edge(held_out).detach()), held_out).mean().item()
    assert kept == pytest.approx(max(attack.restart_scores), abs=1e-5)


def test_one_restart_is_the_single_decoder_trained_on_every_image():
    split = tiny_split("relu12")
    aux = labelled(smooth_images(40, seed=14))
    options = dict(epochs=1, batch_size=16, width=8, progress=False)
    view = view_of(split, InverseNetworkAttack.requires, aux=aux)
    one, default = InverseNetworkAttack(view, restarts=1, **options).fit(), InverseNetworkAttack(view, **options).fit()
    z = split.edge(smooth_images(3, seed=15)).detach()
    assert torch.equal(one.invert(z), default.invert(z)) and one.restart_scores == []
