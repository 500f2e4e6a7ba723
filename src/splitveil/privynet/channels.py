"""Which channels the local network keeps: at random, or chosen against an attacker.

PrivyNet's third knob [paper]. Attacker-guided selection [ours, following the paper's idea of
characterising privacy per channel]: train an inverse network on the *full* local network's
features of auxiliary images, then score each channel by how much the decoder's reconstruction
error rises when that channel is zeroed; the channels it relies on most are dropped first.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks import AttackerView, Capability, create_attack
from splitveil.data import ImageSet
from splitveil.split import SplitModel


def random_channels(total: int, count: int, *, seed: int) -> list[int]:
    """``count`` of ``range(total)`` drawn without replacement from a generator seeded by ``seed``, sorted."""
    if not 1 <= count <= total:
        raise ValueError(f"cannot keep {count} of {total} channels; choose between 1 and {total}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


@torch.no_grad()
def channel_usefulness(
    local: nn.Module, aux: ImageSet, targets: ImageSet, *, epochs: int, seed: int, progress: bool = True
) -> torch.Tensor:
    """Per output channel of ``local``: the rise in an inverse network's MSE on ``targets`` when it is zeroed."""
    split = SplitModel(local, nn.Identity())
    input_shape = cast(tuple[int, int, int], tuple(aux.images.shape[1:]))  # images are NCHW
    view = AttackerView.of(split, {Capability.EDGE_QUERIES, Capability.AUX_DATA}, input_shape=input_shape, aux=aux)
    with torch.enable_grad():
        attack = create_attack("inverse-network", view, seed=seed, progress=progress, epochs=epochs).fit()
    z = local(targets.images)
    baseline = F.mse_loss(attack.invert(z), targets.images)
    rises = []
    for channel in range(z.shape[1]):
        ablated = z.clone()
        ablated[:, channel] = 0
        rises.append(F.mse_loss(attack.invert(ablated), targets.images) - baseline)
    return torch.stack(rises)


def attacker_guided_channels(usefulness: torch.Tensor, count: int) -> list[int]:
    """The ``count`` channels least useful to the attacker (its most useful ones are dropped), sorted."""
    total = len(usefulness)
    if not 1 <= count <= total:
        raise ValueError(f"cannot keep {count} of {total} channels; choose between 1 and {total}")
    return sorted(usefulness.argsort()[:count].tolist())
