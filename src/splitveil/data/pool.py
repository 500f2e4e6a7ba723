"""Raw source rows and the one recipe that turns them into :class:`DatasetSplits`.

Loaders read files into compact numpy arrays (uint8 for MNIST-like data) and only the rows that
end up in a split are converted to float32; with ``limit`` that is a small fraction of the file.
Keeping the recipe here means every loader splits, caps and labels its data the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from splitveil.data.base import DatasetSplits, ImageSet, check_limit, make_splits


@dataclass(frozen=True, eq=False)
class RawPool:
    """Rows of one source (e.g. an official train file) before conversion to float32.

    ``images`` is ``[N, C, H, W]`` in any numeric dtype; dividing by ``scale`` maps it to
    ``[0, 1]``. ``first_source_index`` is the source index of row 0, so that a dataset's test
    rows can be numbered after its train rows and source indices stay unique dataset-wide.
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float = 255.0
    first_source_index: int = 0

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1:
            raise ValueError("RawPool needs images [N, C, H, W] and labels [N]")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"RawPool has {self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, rows: torch.Tensor) -> ImageSet:
        """The rows at positions ``rows`` as a float32 ``[0, 1]`` :class:`ImageSet`."""
        picked = rows.numpy()
        images = torch.from_numpy(np.ascontiguousarray(self.images[picked])).to(torch.float32)
        if self.scale != 1.0:
            images = images.div_(self.scale)
        labels = torch.from_numpy(self.labels[picked].astype(np.int64))
        return ImageSet(images, labels, rows.to(torch.int64) + self.first_source_index)


def split_pools(
    name: str,
    *,
    pool: RawPool,
    fractions: Mapping[str, float],
    class_names: tuple[str, ...],
    seed: int,
    limit: int | None,
    test_pool: RawPool | None = None,
    stratify: bool = False,
) -> DatasetSplits:
    """Split ``pool`` by ``fractions`` (the rest is ``train``) into a :class:`DatasetSplits`.

    With ``test_pool`` (an official test set) that becomes ``test`` as is, and ``fractions``
    must not contain ``test``; without it ``fractions`` must. ``limit`` caps every split, taking
    the first rows of each (the splits from ``pool`` are already shuffled).
    """
    limit = check_limit(limit)
    if (test_pool is None) != ("test" in fractions):
        raise ValueError("give either test_pool or a 'test' fraction, not both or neither")
    labels = torch.from_numpy(pool.labels.astype(np.int64)) if stratify else None
    indices = make_splits(len(pool), fractions, seed=seed, stratify=labels, limit_per_split=limit)
    sets = {role: pool.select(rows) for role, rows in indices.items()}
    if test_pool is not None:
        count = len(test_pool) if limit is None else min(limit, len(test_pool))
        sets["test"] = test_pool.select(torch.arange(count, dtype=torch.int64))
    return DatasetSplits(
        name=name,
        train=sets["train"],
        val=sets["val"],
        test=sets["test"],
        aux=sets["aux"],
        num_classes=len(class_names),
        class_names=class_names,
        seed=seed,
    )
