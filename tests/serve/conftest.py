"""A tiny deployed split exported as a bundle, shared by the serving tests."""

import pytest

from splitveil.config import DefenseSpec, parse_spec
from splitveil.deploy import deploy
from splitveil.experiment import train_or_load
from splitveil.serve import export_bundle
from splitveil.serve.deployment import Deployment

SPEC = parse_spec(
    {
        "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 16}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3},
    }
)


@pytest.fixture
def trained(tiny_data, cache):
    return train_or_load(SPEC, cache=cache, data=tiny_data, progress=False)


@pytest.fixture
def make_bundle(trained, cache, tmp_path):
    """``make_bundle(defense_spec=None, strength=0.0, cut="relu22")`` -> (bundle dir, deployed split)."""

    def build(defense: DefenseSpec | None = None, strength: float = 0.0, cut: str = "relu22"):
        deployed = deploy(SPEC, trained, cut, defense, strength, cache=cache, progress=False)
        name = f"bundle-{cut}-{defense.name if defense else 'none'}-{strength}"
        out = export_bundle(
            tmp_path / name, spec=SPEC, trained=trained, deployed=deployed, defense_spec=defense, strength=strength
        )
        return out, deployed

    return build


@pytest.fixture
def bundle(make_bundle):
    return make_bundle()[0]


@pytest.fixture
def make_onnx_bundle(make_bundle, trained):
    """``make_onnx_bundle(defense_spec=None, strength=0.0)`` -> (bundle with cloud.onnx beside it, deployed split)."""

    def build(defense: DefenseSpec | None = None, strength: float = 0.0):
        out, deployed = make_bundle(defense, strength)
        Deployment(SPEC, trained, deployed, defense, strength).export_onnx(out)
        return out, deployed

    return build
