"""A stack of defenses: layers apply in order, scale with the stack's strength, and train together."""

from __future__ import annotations

import pytest
import torch

from splitveil.blocks.bounded_noise import BoundedNoise
from splitveil.client_side import DeviceSide
from splitveil.defenses import FeatureDropout, create_defense
from splitveil.defenses.base import Defense
from splitveil.errors import ConfigError
from splitveil.split import SplitModel
from splitveil.train import Batch

from .conftest import NUM_CLASSES, images, tiny_split
from .test_client_side import AddSecret

LAYERS = [
    {"name": "nopeek"},
    {"name": "bounded-noise", "strength": 0.5, "options": {"bound": 2.0}},
    {"name": "feature-dropout", "strength": 0.4},
]


def test_layers_apply_in_order_with_strengths_scaled_by_the_stack_s():
    stack = create_defense("stack", strength=0.5, layers=LAYERS)
    assert [d.strength for d in stack.defenses] == [0.5, 0.25, 0.2]
    edge = stack.apply(tiny_split()).edge
    blocks = [m for m in edge.modules() if isinstance(m, BoundedNoise | FeatureDropout)]
    assert [type(b) for b in blocks] == [BoundedNoise, FeatureDropout]  # dropout wraps the noised feature
    assert blocks[0].relative_std == 0.25 and blocks[0].bound == 2.0 and blocks[1].p == 0.2
    assert stack.requires_training  # nopeek and bounded noise train


def test_loss_terms_of_every_layer_add_up_under_their_layer_s_name():
    stack = create_defense("stack", strength=1.0, layers=LAYERS)
    split = stack.apply(tiny_split())
    x = images(8)
    z, logits = split.forward_with_features(x)
    terms = stack.loss_terms(Batch(x, torch.arange(8) % 3), z, logits)
    assert set(terms) == {"layer0.nopeek"}  # bounded noise and dropout add none
    assert torch.isfinite(terms["layer0.nopeek"]) and float(terms["layer0.nopeek"]) > 0


def test_describe_records_the_layers_so_a_bundle_rebuilds_the_same_stack():
    stack = create_defense("stack", strength=1.0, layers=LAYERS)
    described = stack.describe()
    rebuilt = create_defense("stack", strength=described["strength"], layers=described["layers"])
    assert rebuilt.describe() == described
    assert described["layers"][0] == {"name": "nopeek", "strength": 1.0, "options": {}}


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"name": "stack"}, "is not a defense to stack"),
        ({"name": "gausian-noise"}, "is not a defense to stack; choose one of"),
        ({"name": "nopeek", "weight": 2}, "unknown key"),
        ({"name": "nopeek", "strength": -1}, "strength must be a number >= 0"),
        ("nopeek", "must be a mapping"),
    ],
)
def test_a_bad_layer_is_one_clear_error(layer, message):
    with pytest.raises(ConfigError, match=message):
        create_defense("stack", strength=1.0, layers=[layer])


def test_salted_goes_last_so_the_client_keeps_its_salt_and_decodes_the_answer():
    with pytest.raises(ConfigError, match=r"layer 0 \(salted\) keeps device secrets .* put it last"):
        create_defense("stack", strength=1.0, layers=[{"name": "salted"}, {"name": "bounded-noise"}])
    stack = create_defense("stack", strength=1.0, layers=[{"name": "bounded-noise"}, {"name": "salted"}])
    edge = stack.apply(tiny_split()).edge
    assert DeviceSide(edge).num_secrets == NUM_CLASSES  # the salted edge is the one the client runs
    assert any(isinstance(m, BoundedNoise) for m in edge.modules())  # with the input defense inside it


def test_the_cloud_s_copy_of_a_stack_s_options_lacks_its_layers_secrets():
    layers = [{"name": "bounded-noise"}, {"name": "salted", "options": {"key": "device-only", "scheme": "latin"}}]
    options = create_defense("stack", strength=1.0, layers=layers).options()
    public = type(create_defense("stack", strength=1.0, layers=[])).public_options(options)
    assert "key" not in public["layers"][1]["options"] and public["layers"][1]["options"]["scheme"] == "latin"
    assert public["layers"][0] == options["layers"][0] and options["layers"][1]["options"]["key"] == "device-only"


def test_a_layer_s_own_option_errors_surface_through_the_stack():
    with pytest.raises(ConfigError, match="bound"):
        create_defense("stack", strength=1.0, layers=[{"name": "bounded-noise", "options": {"bound": -1}}])


def test_each_layer_s_defaults_are_recorded_so_a_changed_default_cannot_reuse_a_checkpoint():
    described = create_defense("stack", strength=1.0, layers=[{"name": "gaussian-noise"}]).describe()
    assert described["layers"] == [{"name": "gaussian-noise", "strength": 1.0, "options": {"where": "feature"}}]


class _KeepsASecret(Defense):
    """Deploys an edge that keeps a secret on the device (as a plugin's defense could)."""

    name = "keeps-a-secret"

    def apply(self, split):
        edge = AddSecret()
        return SplitModel(edge, split.cloud, cut_name=split.cut_name)


def test_a_layer_that_keeps_a_device_secret_must_come_last():
    stack = create_defense(
        "stack", strength=1.0, layers=[{"name": "nopeek"}, {"name": "feature-dropout", "strength": 0.2}]
    )
    stack.defenses[0] = _KeepsASecret(strength=1.0)  # not registered: the stack's own check is what is tested
    with pytest.raises(ConfigError, match="layer 0 .* keeps a secret on the device"):
        stack.apply(tiny_split())
    stack.defenses = [stack.defenses[1], _KeepsASecret(strength=1.0)]
    assert isinstance(stack.apply(tiny_split()).edge, AddSecret)  # last: the client still sees its secret
