from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks import QueryFreeAttack
from splitveil.split import cut

from .conftest import assert_unchanged, labelled, smooth_images, snapshot, view_of


def test_shadow_edge_is_trained_through_the_frozen_cloud():
    # A cloud whose linear layer is tuned to its edge's channels: a random edge is far off for it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        split = cut(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 144, 3)), "1")
    aux = labelled(smooth_images(96, seed=21))
    optimizer = torch.optim.Adam(split.parameters(), lr=1e-2)
    for _ in range(40):  # the owner's training, not the attack's
        optimizer.zero_grad()
        F.cross_entropy(split(aux.images), aux.labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    split.eval()
    cloud_before = snapshot(split.cloud)

    view = view_of(split, QueryFreeAttack.requires, aux=aux)
    attack = QueryFreeAttack(view, shadow_epochs=20, shadow_batch_size=16, shadow_lr=1e-2, steps=5, progress=False)
    attack.fit()

    assert_unchanged(split.cloud, cloud_before)
    assert attack.shadow is not None and attack.shadow is not view.edge_architecture
    assert attack.history[-1] < attack.history[0]

    def cloud_loss(edge: nn.Module) -> float:
        with torch.no_grad():
            return F.cross_entropy(split.cloud(edge(aux.images)), aux.labels).item()

    assert cloud_loss(attack.shadow) < 0.5 * cloud_loss(view.edge_architecture)  # vs. an untrained shadow

    out = attack.invert(split.edge(smooth_images(2)).detach())
    assert out.shape == (2, 1, 12, 12)
