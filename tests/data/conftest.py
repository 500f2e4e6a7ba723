"""Fixtures that write tiny, synthetic dataset files in the formats splitveil.data reads."""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
FASHION_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as an IDX file (big-endian header and values)."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def idx_writer() -> Callable[..., Path]:
    """``write_idx(path, array, gz=False)`` for tests that build their own IDX files."""
    return write_idx


@pytest.fixture
def make_fashion_dir() -> Callable[..., Path]:
    """Write the four Fashion-MNIST IDX files (train gzipped, test raw) into a directory.

    Pixel value of image i is ``i`` everywhere, so rows can be traced after shuffling.
    """

    def make(directory: Path, n_train: int = 30, n_test: int = 12) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for stem, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
            images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
            labels = (np.arange(n) % 10).astype(np.uint8)
            suffix = ".gz" if gz else ""
            write_idx(directory / f"{stem}-images-idx3-ubyte{suffix}", images, gz=gz)
            write_idx(directory / f"{stem}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        return directory

    return make


def cifar_batch(n: int, first_label: int, rng: np.random.Generator) -> dict[bytes, object]:
    """A batch dict shaped like the real CIFAR-10 python files (bytes keys, list labels)."""
    return {
        b"batch_label": b"synthetic batch",
        b"labels": [(first_label + i) % 10 for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def dump(path: Path, obj: object) -> None:
    # Protocol 2 is what the original (Python 2) files use; bytes go through _codecs.encode.
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


@pytest.fixture
def make_cifar_dir() -> Callable[..., Path]:
    """Write ``parent/cifar-10-batches-py`` with 2 training batches of 20 and a test batch of 10.

    Returns the batches directory. Image 0 of data_batch_1 has a marked pixel at row 5, col 7:
    R=200, G=100, B=50.
    """

    def make(parent: Path, n_batches: int = 2, meta: bool = True) -> Path:
        rng = np.random.default_rng(0)
        directory = parent / "cifar-10-batches-py"
        directory.mkdir(parents=True)
        for k in range(1, n_batches + 1):
            batch = cifar_batch(20, first_label=k, rng=rng)
            if k == 1:
                data = batch[b"data"]
                assert isinstance(data, np.ndarray)
                pos = 5 * 32 + 7
                data[0, pos], data[0, 1024 + pos], data[0, 2048 + pos] = 200, 100, 50
            dump(directory / f"data_batch_{k}", batch)
        dump(directory / "test_batch", cifar_batch(10, first_label=0, rng=rng))
        if meta:
            names = [f"class{i}".encode() for i in range(10)]
            dump(directory / "batches.meta", {b"label_names": names, b"num_vis": 3072})
        return directory

    return make
