"""Datasets for split-inference privacy experiments, read from local disk only.

Every dataset is loaded as a :class:`DatasetSplits` with four disjoint roles - the model owner's
``train`` and ``val``, the evaluation ``test`` and the attacker's ``aux`` - produced
deterministically from a seed. Use :func:`load_dataset` with a name from ``DATASETS.names()``.

Importing this package registers the loaders; heavy optional dependencies (scikit-image) are
imported only when their dataset is loaded.
"""

from __future__ import annotations

# The loader modules are imported for their side effect: each registers itself in DATASETS.
from splitveil.data import cifar10, fashion_mnist, lfw_faces, mnist5k  # noqa: F401
from splitveil.data.base import DatasetSplits, ImageSet, make_splits
from splitveil.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "DatasetSplits", "ImageSet", "load_dataset", "make_splits"]
