"""The joint inverse network: one decoder on ``(z, cloud(z))``, never held back to either half alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks import InverseNetworkAttack, JointInverseNetworkAttack, OutputOracle
from splitveil.attacks.decoder import FeatureWithAnswer
from splitveil.attacks.inverse_network import held_out_split
from splitveil.split import SplitModel

from .conftest import INPUT_SHAPE, labelled, smooth_images, tiny_split, view_of


class _ScramblingEdge(nn.Module):
    """Sends the image with its pixels shuffled by a fixed permutation: all of it, in an order that
    3x3 convolutions cannot undo from a few hundred examples."""

    def __init__(self, permutation: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("permutation", permutation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, self.permutation].reshape(x.shape)


class _CoarseCloud(nn.Module):
    """Unshuffles the pixels (it was trained to) and answers the 3x3 block means: a coarse image."""

    def __init__(self, permutation: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inverse", torch.argsort(permutation))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = z.flatten(1)[:, self.inverse].reshape(z.shape)
        return F.adaptive_avg_pool2d(image, 3).flatten(1)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).square().mean().item()


def test_the_joint_decoder_reads_the_answer_where_the_feature_alone_defeats_it():
    permutation = torch.randperm(INPUT_SHAPE[1] * INPUT_SHAPE[2], generator=torch.Generator().manual_seed(0))
    split = SplitModel(edge=_ScramblingEdge(permutation), cloud=_CoarseCloud(permutation))
    aux, targets = labelled(smooth_images(384, seed=1)), smooth_images(64, seed=2)
    z = split.edge(targets)
    options = dict(loss="mse", epochs=12, batch_size=32, lr=3e-3, width=16, blocks=0, progress=False)
    errors = {
        attack.__name__: _mse(attack(view_of(split, attack.requires, aux=aux), **options).fit().invert(z), targets)
        for attack in (InverseNetworkAttack, OutputOracle, JointInverseNetworkAttack)
    }
    assert errors["OutputOracle"] < 0.7 * errors["InverseNetworkAttack"]  # the answer is what a small decoder can use
    assert errors["JointInverseNetworkAttack"] < 1.15 * errors["OutputOracle"], errors


def test_the_joint_attack_observes_the_flat_feature_then_the_answer():
    split = tiny_split()
    attack = JointInverseNetworkAttack(view_of(split, JointInverseNetworkAttack.requires), epochs=1, width=8,
                                       progress=False).fit()  # fmt: skip
    z = split.edge(smooth_images(2, seed=4)).detach()
    answer = split.cloud(z).detach()
    assert torch.equal(attack.observe(z), torch.cat([z.flatten(1), answer], dim=1))
    unpack = next(module for module in attack.decoder.modules() if isinstance(module, FeatureWithAnswer))
    assert unpack.feature_shape == tuple(z.shape[1:])
    assert attack.invert(z).shape == (2, *INPUT_SHAPE)


def test_feature_with_answer_puts_the_feature_first_and_the_answer_map_beside_it():
    unpack = FeatureWithAnswer((2, 3, 3), answer_size=4, channels=5)
    feature, answer = torch.randn(6, 2, 3, 3), torch.randn(6, 4)
    out = unpack(torch.cat([feature.flatten(1), answer], dim=1))
    assert out.shape == (6, 7, 3, 3)
    assert torch.equal(out[:, :2], feature)
    assert torch.allclose(out[:, 2:], unpack.project(answer).reshape(6, 5, 3, 3))


def test_the_joint_attack_decodes_with_whichever_decoder_reconstructs_held_out_images_better():
    split = tiny_split()
    aux = labelled(smooth_images(60, seed=5))
    attack = JointInverseNetworkAttack(view_of(split, JointInverseNetworkAttack.requires, aux=aux), epochs=2,
                                       width=8, progress=False).fit()  # fmt: skip
    training, held_out = held_out_split(aux.images, attack.seed)
    assert (len(training), len(held_out)) == (54, 6)
    rows = {tuple(image.flatten().tolist()) for image in aux.images}
    assert {tuple(i.flatten().tolist()) for i in torch.cat([training, held_out])} == rows  # a partition of aux
    assert set(attack.selection) == {"joint", "answer"}
    z = split.edge(smooth_images(3, seed=6)).detach()
    answer_wins = attack.selection["answer"] > attack.selection["joint"]
    decoded_by_answer = attack._answer_only is not None
    assert decoded_by_answer == answer_wins
    if decoded_by_answer:
        assert torch.equal(attack.invert(z), attack._answer_only.invert(z))
    else:
        assert torch.equal(attack.invert(z), attack.decoder(attack.observe(z)))
