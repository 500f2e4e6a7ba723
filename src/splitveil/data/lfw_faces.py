"""LFW faces vs. non-faces: 200 grayscale 25x25 crops bundled with scikit-image.

``skimage.data.lfw_subset()`` ships inside the scikit-image wheel, so it works offline: 100 face
crops followed by 100 background (non-face) crops. Label 1 = face, 0 = non-face. Faces make
reconstruction attacks easy to judge by eye, which is why this tiny set is included.

Default splits (stratified per class, seeded): test 20 % (40), aux 20 % (40), val 10 % (20),
train the rest (100). ``data_dir`` is accepted only for the common loader signature; the data
always comes from scikit-image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitveil.data.base import DatasetSplits, check_fractions, check_limit
from splitveil.data.pool import RawPool, split_pools
from splitveil.data.registry import DATASETS
from splitveil.errors import DatasetNotFoundError
from splitveil.options import Fraction, PositiveInt

NAME = "lfw-faces"
TEST_FRACTION = 0.2
FACES_FIRST = 100  # lfw_subset() returns the 100 faces before the 100 non-faces
CLASS_NAMES: tuple[str, ...] = ("non-face", "face")


def read_lfw_subset() -> RawPool:
    """The 200 crops from scikit-image (imported here, not at package import: it is slow)."""
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise DatasetNotFoundError(f"{NAME}: scikit-image is not installed; run `pip install scikit-image`") from None
    images = np.asarray(lfw_subset())
    if images.ndim != 3 or images.shape[0] != 2 * FACES_FIRST:
        raise DatasetNotFoundError(f"{NAME}: unexpected lfw_subset() shape {images.shape}; expected (200, H, W)")
    # Older releases documented uint8; the shipped file is float in [0, 1]. Handle both.
    scale = 255.0 if np.issubdtype(images.dtype, np.integer) else 1.0
    labels = np.zeros(images.shape[0], dtype=np.int64)
    labels[:FACES_FIRST] = 1
    return RawPool(images=images[:, np.newaxis], labels=labels, scale=scale)


@DATASETS.register(NAME)
def load_lfw_faces(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    aux_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
    limit: PositiveInt | None = None,
) -> DatasetSplits:
    """Load the scikit-image LFW subset, split per class with ``seed``."""
    del data_dir  # the data ships inside scikit-image
    fractions = check_fractions({"test": TEST_FRACTION, "aux": aux_fraction, "val": val_fraction})
    check_limit(limit)
    return split_pools(
        NAME,
        pool=read_lfw_subset(),
        fractions=fractions,
        class_names=CLASS_NAMES,
        seed=seed,
        limit=limit,
        stratify=True,
    )
