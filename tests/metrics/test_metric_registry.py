import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import splitveil.metrics as metrics
from splitveil.errors import UnknownNameError
from splitveil.metrics import METRICS, MetricInfo


def test_the_image_metrics_are_registered_with_their_direction():
    assert METRICS.names() == ["mse", "psnr", "ssim"]
    directions = {name: METRICS.create(name).higher_is_better for name in METRICS}
    assert directions == {"mse": False, "psnr": True, "ssim": True}


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_prefers_the_closer_reconstruction(name):
    info = METRICS.create(name)
    assert isinstance(info, MetricInfo) and info.name == name and info.description
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16, generator=g)
    noise = torch.randn(x.shape, generator=g)
    close, far = info(x + 0.05 * noise, x), info(x + 0.3 * noise, x)
    assert (close > far) == info.higher_is_better
    assert info(x, x, reduction="none").shape == (3,)


def test_unknown_metric_names_list_the_registered_ones():
    with pytest.raises(UnknownNameError, match="mse, psnr, ssim"):
        METRICS.create("ssmi")


def test_package_exports_and_stays_light():
    expected = {"mse", "psnr", "ssim", "estimate_mi", "MIEstimate", "privacy_accuracy", "train_evaluation_classifier"}
    expected.add("METRICS")
    assert expected <= set(metrics.__all__)
    assert all(hasattr(metrics, name) for name in metrics.__all__)
    # torchmetrics and the training loop (pydantic configs, torch.fx) load on first use only.
    check = "import sys, splitveil.metrics; print(sorted({'torchmetrics', 'splitveil.train'} & set(sys.modules)))"
    src = str(Path(metrics.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"
