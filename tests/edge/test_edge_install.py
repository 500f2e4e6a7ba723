"""A device's install: ``pip install 'splitveil[edge]'`` into a fresh venv brings no torch, and its
``splitveil infer --runtime onnx`` classifies real Fashion-MNIST images through a real server exactly
as the toolkit's torch client does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from splitveil.checkpoint import CheckpointCache, read_metadata
from splitveil.config import parse_spec
from splitveil.deploy import deploy
from splitveil.experiment import train_or_load
from splitveil.serve import export_bundle
from splitveil.serve.onnx_export import export_onnx
from splitveil.serve.process import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPEC = parse_spec(
    {
        "name": "edge-install",
        "data": {"name": "fashion-mnist", "limit": 3000},
        "model": {"name": "he-cnn", "options": {"widths": [8, 16, 16], "hidden": 32}},
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
    }
)


def _run(*command: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _toolkit_versions() -> str:
    """The exact versions this (the toolkit's) environment has, as pip constraints: the device gets
    the same numpy and onnxruntime the export was verified with."""
    frozen = _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").stdout.splitlines()
    return "\n".join(line for line in frozen if "==" in line and "@" not in line) + "\n"


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the wheel of this checkout installed as ``[edge]``."""
    work = tmp_path_factory.mktemp("edge-install")
    source = work / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "wheels", source)
    wheel = next((work / "wheels").glob("splitveil-*.whl"))
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    constraints = work / "constraints.txt"
    constraints.write_text(_toolkit_versions())
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", constraints, f"{wheel}[edge]")
    return venv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A trained split's bundle at relu22 with edge.onnx and cloud.onnx beside it, and real test images."""
    root = tmp_path_factory.mktemp("bundle")
    cache = CheckpointCache(root / "cache")
    trained = train_or_load(SPEC, cache=cache, progress=False)
    deployed = deploy(SPEC, trained, "relu22", None, 0.0, cache=cache, progress=False)
    path = export_bundle(root / "bundle", spec=SPEC, trained=trained, deployed=deployed, defense_spec=None, strength=0)
    metadata = {half: read_metadata(path / half) for half in ("edge", "cloud")}
    export_onnx(deployed.split.eval(), path, samples=trained.data.test.images[:8], metadata=metadata)
    return path, trained.data.test.take(24)


def test_the_device_install_has_no_torch(device_venv):
    python = device_venv / "bin" / "python"
    refused = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    assert refused.returncode != 0 and "No module named 'torch'" in refused.stderr
    installed = _run(python, "-m", "pip", "list", "--format", "json").stdout
    assert "onnxruntime" in installed and '"torch"' not in installed
    # The edge package loads, and a toolkit command says what to install instead of a traceback.
    _run(python, "-c", "from splitveil.edge import EdgeClient, OnnxEdge, read_image_files")
    toolkit = subprocess.run([device_venv / "bin" / "splitveil", "models"], capture_output=True, text=True)
    assert toolkit.returncode == 2 and "pip install 'splitveil[torch]'" in toolkit.stderr, toolkit.stderr


def test_infer_on_the_device_predicts_what_the_torch_client_does(device_venv, bundle, tmp_path):
    path, test = bundle
    files = []
    for i in range(4):  # real images as PNG files, as a camera would save them
        files.append(tmp_path / f"image{i}.png")
        iio.imwrite(files[-1], (test.images[i, 0].numpy() * 255).round().astype(np.uint8))
    files.append(tmp_path / "batch.npy")
    np.save(files[-1], test.images[4:].numpy())
    with ServerProcess(path, extra=["--no-auth"]) as server:
        common = ["infer", *files, "--url", server.url, "--json"]
        # The device has only edge.onnx: the rest of the bundle stays with the toolkit.
        device = _run(
            device_venv / "bin" / "splitveil", *common, "--runtime", "onnx", "--checkpoint", path / "edge.onnx"
        )
        toolkit = _run(sys.executable, "-m", "splitveil.cli", *common, "--runtime", "torch", "--checkpoint", path)
    on_device = [json.loads(line) for line in device.stdout.splitlines()]
    with_torch = [json.loads(line) for line in toolkit.stdout.splitlines()]
    assert len(on_device) == len(test) and on_device == with_torch
    accuracy = np.mean([line["label"] == label for line, label in zip(on_device, test.labels.tolist(), strict=True)])
    assert accuracy > 0.3, accuracy  # real images, really classified (chance: 0.1)
