"""The local network is the public model's prefix, sliced and frozen; the cloud learns on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.config import TrainConfig
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.privynet import (
    attacker_guided_channels,
    channel_usefulness,
    local_network,
    local_width,
    privynet_split,
    random_channels,
    within_budget,
)
from splitveil.privynet.spec import PlanConstraints
from splitveil.split import cut
from splitveil.train import fit


def tiny_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("he-cnn", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8, 8), hidden=16)


def test_the_local_network_is_the_kept_channels_of_the_public_prefix() -> None:
    public = tiny_model()
    x = torch.rand(5, 1, 12, 12)
    keep = [1, 6, 3]
    local = local_network(public, layer="relu22", keep=keep)
    with torch.no_grad():
        assert torch.equal(local(x), cut(public, at="relu22").edge(x)[:, keep])
    assert local_width(public, "relu22") == 8


def test_the_local_network_is_frozen_and_stays_in_eval_mode() -> None:
    local = local_network(tiny_model(), layer="relu12", keep=[0, 2]).train()
    assert not any(p.requires_grad for p in local.parameters())
    assert not local.network.training


def test_only_the_cloud_learns(tiny_data) -> None:
    public = tiny_model(0)
    split = privynet_split(public, tiny_model(1), layer="relu22", keep=[0, 1, 2, 3])
    local_before = {k: v.clone() for k, v in split.edge.state_dict().items()}
    cloud_before = {k: v.clone() for k, v in split.cloud.state_dict().items()}
    fit(split, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2), seed=0, progress=False)
    assert all(torch.equal(v, split.edge.state_dict()[k]) for k, v in local_before.items())
    assert any(not torch.equal(v, split.cloud.state_dict()[k]) for k, v in cloud_before.items())
    assert split(torch.rand(2, 1, 12, 12)).shape == (2, 3)


def test_dropping_channels_saves_edge_flops_and_storage() -> None:
    public, fresh = tiny_model(0), tiny_model(1)
    wide = privynet_split(public, fresh, layer="relu22", keep=list(range(8))).profile((1, 12, 12))
    narrow = privynet_split(public, fresh, layer="relu22", keep=[0, 1]).profile((1, 12, 12))
    assert narrow.edge_flops < wide.edge_flops and narrow.edge_params < wide.edge_params
    assert narrow.feature_bytes == wide.feature_bytes // 4


def test_bad_channel_lists_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="distinct indices"):
        local_network(tiny_model(), layer="relu22", keep=[0, 0])
    with pytest.raises(ConfigError, match=r"\[0, 8\)"):
        local_network(tiny_model(), layer="relu22", keep=[8])


def test_random_channels_are_seeded_distinct_and_sorted() -> None:
    first = random_channels(16, 5, seed=3)
    assert first == random_channels(16, 5, seed=3) and first == sorted(set(first)) and len(first) == 5
    assert first != random_channels(16, 5, seed=4)
    with pytest.raises(ValueError, match="between 1 and 16"):
        random_channels(16, 17, seed=0)


def test_attacker_guided_selection_drops_the_most_useful_channels() -> None:
    assert attacker_guided_channels(torch.tensor([0.5, 0.0, 0.9, 0.1]), 2) == [1, 3]


def test_usefulness_finds_the_channel_that_carries_the_image(tiny_data) -> None:
    # Channel 0 is the image itself, channel 1 is always zero: only zeroing channel 0 hurts the attacker.
    local = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        local.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        local.bias.zero_()
    usefulness = channel_usefulness(local, tiny_data.train, tiny_data.test, epochs=3, seed=0, progress=False)
    assert usefulness[0] > 0.01 and abs(float(usefulness[1])) < 1e-6


def test_budget_checks_every_limit_that_is_set() -> None:
    limits = PlanConstraints(max_edge_flops=100, max_storage_bytes=40)
    assert within_budget(limits, edge_flops=100, edge_params=10**6, storage_bytes=40)
    assert not within_budget(limits, edge_flops=101, edge_params=1, storage_bytes=4)
    assert not within_budget(limits, edge_flops=1, edge_params=1, storage_bytes=41)
    assert within_budget(PlanConstraints(), edge_flops=10**9, edge_params=10**9, storage_bytes=10**9)
