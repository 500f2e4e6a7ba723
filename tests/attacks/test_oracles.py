"""The oracles: the floor of leakage (what the answer alone reconstructs), tested at their anchors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.attacks import ATTACKS, Capability, LabelOracle, OutputOracle, create_attack
from splitveil.errors import CapabilityError
from splitveil.metrics import ssim
from splitveil.split import SplitModel

from .conftest import labelled, smooth_images, tiny_split, view_of


class _ConstantCloud(nn.Module):
    """A cloud that answers the same logits whatever it receives."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tensor([2.0, -1.0, 0.5]).expand(len(z), 3)


def test_oracles_are_flagged_and_the_attacks_are_not():
    assert ATTACKS.get("output-oracle").oracle and ATTACKS.get("label-oracle").oracle
    assert not any(ATTACKS.get(name).oracle for name in ("rmle", "inverse-network", "query-free"))


def test_an_output_oracle_against_constant_logits_learns_the_auxiliary_mean_image():
    edge = tiny_split().edge
    split = SplitModel(edge=edge, cloud=_ConstantCloud())
    aux = labelled(smooth_images(256, seed=3))
    view = view_of(split, OutputOracle.requires, aux=aux)
    oracle = OutputOracle(view, loss="mse", epochs=40, batch_size=64, lr=1e-2, width=8, blocks=0, progress=False)
    reconstruction = oracle.fit().invert(edge(smooth_images(4, seed=9)).detach())
    mean = aux.images.mean(dim=0)
    assert (reconstruction - mean).abs().max() < 0.03
    assert torch.allclose(reconstruction[0], reconstruction[3])  # nothing but the answer: one image for all


@pytest.mark.parametrize("missing", [Capability.CLOUD_MODEL, Capability.EDGE_QUERIES])
def test_an_output_oracle_needs_the_cloud_and_queries(missing):
    view = view_of(tiny_split(), set(OutputOracle.requires) - {missing})
    with pytest.raises(CapabilityError, match=missing.value):
        create_attack("output-oracle", view, progress=False)


def test_the_output_oracle_decodes_the_clouds_answer_not_the_feature():
    split = tiny_split()
    view = view_of(split, OutputOracle.requires)
    oracle = OutputOracle(view, epochs=1, batch_size=16, width=8, progress=False).fit()
    z = split.edge(smooth_images(2, seed=4)).detach()
    assert oracle.decoder[0].mean.shape == (3,)  # standardised logits: one statistic per class
    assert torch.equal(oracle.observe(z), split.cloud(z).detach())


def test_the_mse_label_oracle_is_the_class_mean_and_the_ssim_one_scores_higher():
    aux = labelled(smooth_images(300, seed=2))
    targets = torch.tensor([0, 2, 1, 2])
    means = {label: aux.images[aux.labels == label].mean(dim=0) for label in range(3)}
    mse_oracle = LabelOracle(view_of(tiny_split(), LabelOracle.requires, aux=aux, target_labels=targets),
                             metric="mse", progress=False).fit()  # fmt: skip
    out = mse_oracle.invert(torch.zeros(4, 1))
    assert all(torch.allclose(out[i], means[int(label)]) for i, label in enumerate(targets))

    ssim_oracle = LabelOracle(view_of(tiny_split(), LabelOracle.requires, aux=aux, target_labels=targets),
                              steps=100, progress=False).fit()  # fmt: skip
    for label in range(3):
        members = aux.images[aux.labels == label]
        optimal, mean = ssim_oracle.prototypes[label], means[label]
        assert float(ssim(optimal.expand_as(members), members)) >= float(ssim(mean.expand_as(members), members))
        assert 0 <= optimal.min() and optimal.max() <= 1


def test_the_label_oracle_refuses_features_that_are_not_its_targets():
    view = view_of(tiny_split(), LabelOracle.requires, target_labels=torch.tensor([0, 1]))
    oracle = LabelOracle(view, metric="mse", progress=False).fit()
    with pytest.raises(ValueError, match="2 targets"):
        oracle.invert(torch.zeros(3, 1))
