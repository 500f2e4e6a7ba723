"""CIFAR-10 (32x32 colour, 10 classes) from a local ``cifar-10-batches-py`` directory.

splitveil cannot download it; users place the official "python version" on disk. The batch
files are pickles, read with :mod:`splitveil.data.safe_pickle` so a tampered file cannot run
code. Each batch holds ``data`` (uint8 ``[N, 3072]``: the 1024 red, then green, then blue
values of a row-major 32x32 image) and ``labels``; keys are bytes in the real files.

Default splits: ``test_batch`` (10k) is ``test``; the training batches (50k; fewer if only some
``data_batch_*`` files are present) are shuffled with the seed into ``aux`` (20 % = 10k),
``val`` (10 % = 5k) and ``train`` (35k). Source indices number the training rows first (in
batch order), then the test rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from splitveil.data.base import DatasetSplits, check_fractions, check_limit
from splitveil.data.locate import describe_dirs, search_dirs
from splitveil.data.pool import RawPool, split_pools
from splitveil.data.registry import DATASETS
from splitveil.data.safe_pickle import load_numpy_pickle
from splitveil.errors import ConfigError, DatasetNotFoundError
from splitveil.options import Fraction, PositiveInt

NAME = "cifar10"
BATCHES_DIR = "cifar-10-batches-py"
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
CHANNELS, SIDE = 3, 32
CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")


def resolve_batches_dir(directory: Path) -> Path | None:
    """``directory`` if it holds the batches, else its ``cifar-10-batches-py`` child, else None."""
    for candidate in (directory, directory / BATCHES_DIR):
        if (candidate / TEST_BATCH).is_file() and train_batch_files(candidate):
            return candidate
    return None


def train_batch_files(directory: Path) -> list[Path]:
    """The ``data_batch_<k>`` files in ``directory``, ordered by ``k``."""
    if not directory.is_dir():
        return []
    numbered = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if path.is_file() and (match := _TRAIN_BATCH.fullmatch(path.name))
    ]
    return [path for _, path in sorted(numbered)]


def _field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """``batch[key]`` whether the file used bytes keys (real CIFAR files) or str keys."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise ConfigError(f"{path}: CIFAR batch has no {key!r} entry")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(images uint8 [N, 3, 32, 32], labels int64 [N])``."""
    batch = load_numpy_pickle(path)
    if not isinstance(batch, dict):
        raise ConfigError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = np.asarray(_field(batch, "data", path))
    labels = np.asarray(_field(batch, "labels", path), dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise ConfigError(f"{path}: data must be uint8 [N, {CHANNELS * SIDE * SIDE}], got {data.dtype} {data.shape}")
    if labels.shape[0] != data.shape[0]:
        raise ConfigError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ConfigError(f"{path}: labels must be in 0..{len(CLASS_NAMES) - 1}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE), labels


def read_class_names(directory: Path) -> tuple[str, ...]:
    """``label_names`` from ``batches.meta`` when present, else the standard ten names."""
    path = directory / META_FILE
    if not path.is_file():
        return CLASS_NAMES
    meta = load_numpy_pickle(path)
    names = _field(meta, "label_names", path) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != len(CLASS_NAMES):
        raise ConfigError(f"{path}: label_names must be a list of {len(CLASS_NAMES)} names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


@DATASETS.register(NAME)
def load_cifar10(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    aux_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
    limit: PositiveInt | None = None,
) -> DatasetSplits:
    """Load CIFAR-10 from ``data_dir`` or ``$SPLITVEIL_DATA/{cifar10,cifar-10-batches-py}``."""
    fractions = check_fractions({"aux": aux_fraction, "val": val_fraction})
    check_limit(limit)
    dirs = search_dirs(data_dir, env_subdirs=("cifar10", BATCHES_DIR))
    directory = next((d for d in map(resolve_batches_dir, dirs) if d is not None), None)
    if directory is None:
        raise DatasetNotFoundError(
            f"{NAME}: no {BATCHES_DIR} (test_batch and data_batch_*) found in "
            f"{describe_dirs(dirs)}; CIFAR-10 cannot be downloaded by splitveil; place "
            f"{BATCHES_DIR} in DIR and pass --data-dir DIR or set SPLITVEIL_DATA"
        )
    parts = [read_batch(path) for path in train_batch_files(directory)]
    train = RawPool(
        images=np.concatenate([images for images, _ in parts]),
        labels=np.concatenate([labels for _, labels in parts]),
    )
    test_images, test_labels = read_batch(directory / TEST_BATCH)
    test = RawPool(images=test_images, labels=test_labels, first_source_index=len(train))
    return split_pools(
        NAME,
        pool=train,
        test_pool=test,
        fractions=fractions,
        class_names=read_class_names(directory),
        seed=seed,
        limit=limit,
    )
