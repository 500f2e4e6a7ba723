"""The deployed split every fault test serves: a tiny undefended he-cnn cut at relu22, exported as a bundle."""

import pytest

from splitveil.config import parse_spec
from splitveil.deploy import deploy
from splitveil.experiment import train_or_load
from splitveil.serve import export_bundle

SPEC = parse_spec(
    {
        "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 16}},
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3},
    }
)


@pytest.fixture
def bundle(tiny_data, cache, tmp_path):
    trained = train_or_load(SPEC, cache=cache, data=tiny_data, progress=False)
    deployed = deploy(SPEC, trained, "relu22", None, 0.0, cache=cache, progress=False)
    return export_bundle(
        tmp_path / "bundle", spec=SPEC, trained=trained, deployed=deployed, defense_spec=None, strength=0.0
    )
