"""The dataset registry and load_dataset's handling of bad names and options."""

from __future__ import annotations

import inspect

import pytest

from splitveil.data import DATASETS, load_dataset
from splitveil.errors import ConfigError, UnknownNameError

EXPECTED = {"fashion-mnist", "mnist-5k", "lfw-faces", "cifar10"}


def test_all_loaders_registered():
    assert EXPECTED <= set(DATASETS.names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_uniform_loader_signature(name):
    parameters = inspect.signature(DATASETS.get(name)).parameters
    assert list(parameters) == ["data_dir", "seed", "aux_fraction", "val_fraction", "limit"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_unknown_name_lists_choices():
    with pytest.raises(UnknownNameError) as caught:
        load_dataset("fashion-mnst")
    message = str(caught.value)
    assert all(name in message for name in EXPECTED)
    assert "Did you mean 'fashion-mnist'" in message


def test_unknown_option_is_config_error():
    with pytest.raises(ConfigError, match="no option.*batch_size.*valid options: data_dir"):
        load_dataset("lfw-faces", batch_size=3)


def test_import_does_not_pull_heavy_optional_deps():
    import subprocess
    import sys

    code = "import sys, splitveil.data; print(any(m.split('.')[0] in ('skimage', 'mlxtend') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
