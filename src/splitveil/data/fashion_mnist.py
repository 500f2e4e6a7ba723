"""Fashion-MNIST (28x28 grayscale clothing, 10 classes) from the four standard IDX files.

Default splits: the official 10k test set is ``test``; the official 60k train set is shuffled
with the seed and divided into ``aux`` (20 % = 12k), ``val`` (1/12 = 5k) and ``train`` (43k).
Source indices number the official train rows 0..59999 and the test rows 60000..69999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitveil.data.base import DatasetSplits, check_fractions, check_limit
from splitveil.data.idx import IdxFormatError, read_idx
from splitveil.data.locate import describe_dirs, search_dirs
from splitveil.data.pool import RawPool, split_pools
from splitveil.data.registry import DATASETS
from splitveil.errors import DatasetNotFoundError
from splitveil.options import Fraction, PositiveInt

NAME = "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (``.gz`` or not), or None if any is missing."""
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        found[key] = existing[0]
    return found


def read_pool(images_path: Path, labels_path: Path, first_source_index: int) -> RawPool:
    """One images/labels file pair as a pool, checking they describe the same rows."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise IdxFormatError(
            f"{images_path}: expected images [N, H, W] and labels [N], got "
            f"{images.shape} and {labels.shape} (from {labels_path})"
        )
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise IdxFormatError(f"{labels_path}: labels must be in 0..{len(CLASS_NAMES) - 1}")
    return RawPool(
        images=images[:, np.newaxis],
        labels=labels,
        scale=255.0,
        first_source_index=first_source_index,
    )


@DATASETS.register(NAME)
def load_fashion_mnist(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    aux_fraction: Fraction = 0.2,
    val_fraction: Fraction = 1 / 12,
    limit: PositiveInt | None = None,
) -> DatasetSplits:
    """Load Fashion-MNIST from ``data_dir``, ``$SPLITVEIL_DATA`` or the Debian package path."""
    fractions = check_fractions({"aux": aux_fraction, "val": val_fraction})
    check_limit(limit)  # fail on bad options before reading 50 MB
    dirs = search_dirs(data_dir, env_subdirs=("fashion-mnist", ""), defaults=(DEBIAN_DIR,))
    files = next((f for f in map(find_idx_files, dirs) if f is not None), None)
    if files is None:
        raise DatasetNotFoundError(
            f"{NAME}: the four IDX files (train-images-idx3-ubyte[.gz], ...) were not found in "
            f"{describe_dirs(dirs)}; pass --data-dir DIR holding the four IDX files, set "
            "SPLITVEIL_DATA, or run `apt-get install -y dataset-fashion-mnist`"
        )
    train = read_pool(files["train_images"], files["train_labels"], first_source_index=0)
    test = read_pool(files["test_images"], files["test_labels"], first_source_index=len(train))
    return split_pools(
        NAME,
        pool=train,
        test_pool=test,
        fractions=fractions,
        class_names=CLASS_NAMES,
        seed=seed,
        limit=limit,
    )
