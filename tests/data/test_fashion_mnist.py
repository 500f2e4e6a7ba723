"""Fashion-MNIST loader: the real Debian-packaged files plus synthetic directories."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from splitveil.data import DatasetSplits, load_dataset
from splitveil.data.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, find_idx_files
from splitveil.data.idx import IdxFormatError
from splitveil.errors import ConfigError, DatasetNotFoundError

needs_real_data = pytest.mark.skipif(
    find_idx_files(DEBIAN_DIR) is None,
    reason=f"Fashion-MNIST not installed at {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)


def assert_disjoint(splits: DatasetSplits) -> None:
    for (a, x), (b, y) in itertools.combinations(splits.as_dict().items(), 2):
        shared = set(x.indices.tolist()) & set(y.indices.tolist())
        assert not shared, f"{a} and {b} share source rows {sorted(shared)[:5]}"


@pytest.fixture(scope="module")
def real() -> DatasetSplits:
    if find_idx_files(DEBIAN_DIR) is None:
        pytest.skip(f"Fashion-MNIST not installed at {DEBIAN_DIR}")
    return load_dataset("fashion-mnist", data_dir=DEBIAN_DIR)


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("SPLITVEIL_DATA", raising=False)


@needs_real_data
def test_real_default_splits(real):
    assert real.name == "fashion-mnist"
    assert real.input_shape == (1, 28, 28)
    assert real.num_classes == 10 and real.class_names == CLASS_NAMES
    sizes = {role: len(s) for role, s in real.as_dict().items()}
    assert sizes == {"train": 43000, "val": 5000, "test": 10000, "aux": 12000}
    for split in real.as_dict().values():
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert 0.0 <= float(split.images.min()) and float(split.images.max()) <= 1.0
    assert float(real.train.images.max()) == 1.0  # scaled by 255, not left in 0..255
    assert set(real.train.labels.unique().tolist()) == set(range(10))
    assert_disjoint(real)
    # official test rows keep their order and are numbered after the 60k train rows
    assert real.test.indices[:3].tolist() == [60000, 60001, 60002]
    assert sorted(torch.cat([real.train.indices, real.val.indices, real.aux.indices]).tolist()) == list(range(60000))


@needs_real_data
def test_real_deterministic_and_seed_sensitive(real):
    again = load_dataset("fashion-mnist", limit=500)  # default lookup finds the Debian path
    for role, split in again.as_dict().items():
        full = real.as_dict()[role]
        assert torch.equal(split.indices, full.indices[:500])
        assert torch.equal(split.images, full.images[:500])
    other = load_dataset("fashion-mnist", seed=1, limit=500)
    assert not torch.equal(other.train.indices, again.train.indices)
    assert torch.equal(other.test.indices, again.test.indices)  # official test is not shuffled


@needs_real_data
def test_real_limit_caps_every_split():
    small = load_dataset("fashion-mnist", limit=64, aux_fraction=0.3, val_fraction=0.1)
    assert {role: len(s) for role, s in small.as_dict().items()} == dict.fromkeys(("train", "val", "test", "aux"), 64)
    assert_disjoint(small)


def test_synthetic_data_dir(tmp_path, make_fashion_dir):
    directory = make_fashion_dir(tmp_path / "fm", n_train=30, n_test=12)
    splits = load_dataset("fashion-mnist", data_dir=directory, seed=5)
    assert {role: len(s) for role, s in splits.as_dict().items()} == {
        "train": 22,
        "val": 2,
        "test": 12,
        "aux": 6,
    }
    assert_disjoint(splits)
    # each synthetic image's pixels equal its row number, so images follow their source rows
    for split in splits.as_dict().values():
        expected = (split.indices % 30 if split is not splits.test else split.indices - 30).float()
        assert torch.allclose(split.images[:, 0, 0, 0] * 255, expected)
        assert torch.equal(split.labels, (expected.long() % 10))


def test_env_var_subdir_and_root(tmp_path, monkeypatch, make_fashion_dir):
    make_fashion_dir(tmp_path / "root" / "fashion-mnist", n_train=20, n_test=5)
    monkeypatch.setenv("SPLITVEIL_DATA", str(tmp_path / "root"))
    assert len(load_dataset("fashion-mnist").test) == 5
    make_fashion_dir(tmp_path / "flat", n_train=20, n_test=7)
    monkeypatch.setenv("SPLITVEIL_DATA", str(tmp_path / "flat"))
    assert len(load_dataset("fashion-mnist").test) == 7


def test_explicit_data_dir_is_the_only_place_searched(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", data_dir=empty)
    message = str(caught.value)
    assert str(empty) in message and "--data-dir" in message
    assert "SPLITVEIL_DATA" in message and "apt-get install -y dataset-fashion-mnist" in message
    assert str(DEBIAN_DIR) not in message  # explicit dir: no fallback
    assert "\n" not in message


def test_not_found_lists_every_searched_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITVEIL_DATA", str(tmp_path))
    monkeypatch.setattr("splitveil.data.fashion_mnist.DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    for directory in (tmp_path / "fashion-mnist", tmp_path, tmp_path / "no-debian"):
        assert str(directory) in message


def test_missing_one_file_is_not_found(tmp_path, make_fashion_dir):
    directory = make_fashion_dir(tmp_path / "fm")
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist", data_dir=directory)


def test_corrupt_file_names_it(tmp_path, make_fashion_dir):
    directory = make_fashion_dir(tmp_path / "fm")
    path: Path = directory / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte.*truncated"):
        load_dataset("fashion-mnist", data_dir=directory)


def test_bad_options_fail_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="aux_fraction"):
        load_dataset("fashion-mnist", data_dir=tmp_path, aux_fraction=1.5)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("fashion-mnist", data_dir=tmp_path, limit=0)
