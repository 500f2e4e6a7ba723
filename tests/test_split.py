"""Conformance: every zoo model, at every named cut, splits into halves that compose exactly."""

import pytest
import torch
from torch import nn

from splitveil.blocks.bounded_noise import BoundedNoise
from splitveil.blocks.noise_source import use_noise_source
from splitveil.errors import InvalidCutError
from splitveil.models import MODELS, create_model
from splitveil.split import SplitModel, cut, trace, valid_cuts

SHAPES = {"gray28": (1, 28, 28), "rgb32": (3, 32, 32)}


def _model_cuts():
    for name in MODELS.names():
        for cut_name in create_model(name).cut_points:
            yield name, cut_name


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("model_name", "cut_name"), list(_model_cuts()))
def test_cloud_of_edge_equals_unsplit_model(model_name, cut_name, shape):
    torch.manual_seed(0)
    model = create_model(model_name, input_shape=shape, num_classes=7).eval()
    split = cut(model, at=cut_name)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        assert torch.equal(split.cloud(split.edge(x)), model(x))
        assert torch.equal(split(x), model(x))


@pytest.mark.parametrize("model_name", MODELS.names())
def test_every_model_declares_at_least_three_valid_cuts(model_name):
    model = create_model(model_name)
    assert len(model.cut_points) >= 3
    for cut_name in model.cut_points:
        assert isinstance(cut(model, at=cut_name), SplitModel)


@pytest.mark.parametrize("model_name", MODELS.names())
def test_the_registry_states_each_model_s_cut_points_and_input_without_building_it(model_name):
    info = MODELS.info(model_name)
    model = create_model(model_name, input_shape=info["input_shape"])
    assert tuple(model.cut_points) == info["cut_points"]


def test_halves_share_parameters_with_the_model():
    model = create_model("he-cnn")
    split = cut(model, at="relu22")
    model_params = {id(p) for p in model.parameters()}
    assert {id(p) for p in split.parameters()} == model_params


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(self.act(self.conv1(x))) + x)


class UserResNet(nn.Module):
    """A user-defined residual network, not from the zoo."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block1 = _Block()
        self.block2 = _Block()
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_user_residual_module_cut_through_fx():
    model = UserResNet().eval()
    cuts = valid_cuts(model)
    assert "stem" in cuts and "relu" in cuts and "relu_1" in cuts  # block outputs
    assert "block1.act" not in cuts  # inside a block the skip connection also crosses
    x = torch.rand(4, 1, 10, 10)
    for name in cuts:
        split = cut(model, at=name)
        assert torch.equal(split.cloud(split.edge(x)), model(x)), name


def test_cut_inside_residual_block_names_the_extra_tensor():
    with pytest.raises(InvalidCutError, match=r"more than one tensor.*stem.*valid cuts: stem"):
        cut(UserResNet(), at="block1.act")


def test_unknown_cut_lists_the_declared_cuts():
    with pytest.raises(InvalidCutError, match=r"unknown cut 'relu99'.*valid cuts: conv11, relu11"):
        cut(create_model("he-cnn"), at="relu99")


def test_resnet_rejects_cut_inside_a_block():
    with pytest.raises(InvalidCutError, match="more than one tensor"):
        cut(create_model("resnet8"), at="layer2.0.relu1")


def test_last_layer_is_not_a_cut():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    assert valid_cuts(model) == ["0", "1"]


def test_untraceable_model_is_a_clear_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(InvalidCutError, match="cannot trace DataDependent"):
        cut(DataDependent(), at="neg")


def test_a_stochastic_block_traces_as_one_module_that_still_takes_its_noise_source():
    # Traced through, BoundedNoise fails on its shape arithmetic and its draw would freeze its source.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), BoundedNoise(bound=1.0, relative_std=0.5))
    traced = trace(model)
    assert [n.target for n in traced.graph.nodes if n.op == "call_module"] == ["0", "1"]
    x = torch.rand(2, 1, 6, 6)
    assert use_noise_source(traced, torch.Generator().manual_seed(3)) == 1
    first = traced(x)
    use_noise_source(traced, torch.Generator().manual_seed(3))
    assert torch.equal(traced(x), first)  # the source set after tracing is the one drawn from
