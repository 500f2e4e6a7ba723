"""CIFAR-10 loader on synthetic cifar-10-batches-py directories, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from splitveil.data import load_dataset
from splitveil.data.safe_pickle import UnsafePickleError, load_numpy_pickle
from splitveil.errors import DatasetNotFoundError


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("SPLITVEIL_DATA", raising=False)


def test_loads_synthetic_batches(tmp_path, make_cifar_dir):
    directory = make_cifar_dir(tmp_path)
    splits = load_dataset("cifar10", data_dir=directory)
    assert splits.input_shape == (3, 32, 32)
    assert splits.class_names == tuple(f"class{i}" for i in range(10))
    sizes = {role: len(s) for role, s in splits.as_dict().items()}
    assert sizes == {"train": 28, "val": 4, "test": 10, "aux": 8}
    pool = torch.cat([splits.train.indices, splits.val.indices, splits.aux.indices])
    assert sorted(pool.tolist()) == list(range(40))
    assert splits.test.indices.tolist() == list(range(40, 50))
    # labels: batch k row i has label (k + i) % 10; test row i has label i
    for split in (splits.train, splits.val, splits.aux):
        batch, row = split.indices // 20 + 1, split.indices % 20
        assert torch.equal(split.labels, (batch + row) % 10)
    assert splits.test.labels.tolist() == list(range(10))


def test_pixel_layout_is_rgb_planes(tmp_path, make_cifar_dir):
    splits = load_dataset("cifar10", data_dir=make_cifar_dir(tmp_path))
    pool = (splits.train, splits.val, splits.aux)
    (image,) = [s.images[s.indices == 0] for s in pool if bool((s.indices == 0).any())]
    r, g, b = (image[0, channel, 5, 7] * 255 for channel in range(3))
    assert (round(float(r)), round(float(g)), round(float(b))) == (200, 100, 50)
    assert image.dtype == torch.float32


def test_parent_dir_env_var_and_missing_meta(tmp_path, monkeypatch, make_cifar_dir):
    make_cifar_dir(tmp_path / "cifar10", n_batches=1, meta=False)
    by_parent = load_dataset("cifar10", data_dir=tmp_path / "cifar10", limit=2)
    assert by_parent.class_names[0] == "airplane"
    assert all(len(s) == 2 for s in by_parent.as_dict().values())
    monkeypatch.setenv("SPLITVEIL_DATA", str(tmp_path))
    by_env = load_dataset("cifar10", limit=2)
    assert torch.equal(by_env.train.images, by_parent.train.images)


def test_missing_dir_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "cannot be downloaded" in message
    assert "--data-dir" in message and "SPLITVEIL_DATA" in message


def test_needs_a_training_batch(tmp_path, make_cifar_dir):
    directory = make_cifar_dir(tmp_path, n_batches=1)
    (directory / "data_batch_1").unlink()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar10", data_dir=directory)


class RunsShellCommand:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path, make_cifar_dir):
    directory = make_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": RunsShellCommand(str(marker)), b"labels": [0]}
    (directory / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_2.*refusing to unpickle .*system"):
        load_dataset("cifar10", data_dir=directory)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_pickle_allows_arrays_only(tmp_path, protocol):
    path = tmp_path / "ok.pkl"
    payload = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2], "x": (1.5, None)}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    loaded = load_numpy_pickle(path)
    assert loaded["labels"] == [1, 2] and loaded["x"] == (1.5, None)
    np.testing.assert_array_equal(loaded[b"data"], payload[b"data"])
    path.write_bytes(pickle.dumps({"f": print}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle .*print"):
        load_numpy_pickle(path)


def test_safe_pickle_reads_numpy1_module_names(tmp_path):
    # Files written by numpy 1.x (like the official CIFAR-10 ones) name numpy.core, not numpy._core.
    raw = pickle.dumps({b"data": np.arange(4, dtype=np.uint8)}, protocol=2)
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != raw
    path = tmp_path / "legacy.pkl"
    path.write_bytes(legacy)
    np.testing.assert_array_equal(load_numpy_pickle(path)[b"data"], np.arange(4, dtype=np.uint8))
