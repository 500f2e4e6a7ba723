import pytest
import torch
from torch import nn

from splitveil.models import MODELS, create_model
from splitveil.profile import count_params, describe_model, profile_cuts
from splitveil.split import cut


def test_flops_match_a_hand_count():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    profile = cut(model, at="1").profile((2, 5, 5))
    conv_macs = 2 * 3 * 3 * 3 * 5 * 5  # Cin * Cout * k * k * H * W
    linear_macs = 3 * 5 * 5 * 4
    assert profile.edge_flops == 2 * conv_macs
    assert profile.cloud_flops == 2 * linear_macs
    assert profile.edge_params == 2 * 3 * 9 + 3
    assert profile.cloud_params == 75 * 4 + 4
    assert profile.feature_shape == (3, 5, 5)
    assert profile.feature_bytes == 3 * 5 * 5 * 4


@pytest.mark.parametrize("model_name", MODELS.names())
def test_costs_add_up_and_grow_with_depth(model_name):
    model = create_model(model_name)
    total_params = count_params(model)
    profiles = profile_cuts(model, (1, 28, 28))
    full = profiles[0].edge_flops + profiles[0].cloud_flops
    edge_flops = [p.edge_flops for p in profiles]
    assert edge_flops == sorted(edge_flops)
    for p in profiles:
        assert p.edge_params + p.cloud_params == total_params
        assert p.edge_flops + p.cloud_flops == full
        assert p.feature_bytes == 4 * torch.Size(p.feature_shape).numel()


def test_describe_model_lists_every_cut():
    entry = describe_model("he-cnn", input_shape=(1, 28, 28))
    assert [row["cut"] for row in entry["cuts"]] == list(create_model("he-cnn").cut_points)
    relu22 = next(row for row in entry["cuts"] if row["cut"] == "relu22")
    assert relu22["feature_shape"] == [32, 14, 14]
