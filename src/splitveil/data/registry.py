"""The dataset registry and :func:`load_dataset`, the one entry point specs and the CLI use.

Every loader has the same keyword-only signature::

    load(*, data_dir=None, seed=0, aux_fraction=..., val_fraction=..., limit=None) -> DatasetSplits

so an experiment spec can name any dataset with the same options.
"""

from __future__ import annotations

from typing import Any

from splitveil.data.base import DatasetSplits
from splitveil.registry import Registry

DATASETS: Registry[DatasetSplits] = Registry("dataset")


def load_dataset(name: str, **options: Any) -> DatasetSplits:
    """Load the dataset registered as ``name`` with loader ``options``.

    Unknown names raise UnknownNameError listing the registered ones; an unknown option, or a value
    of the wrong type or out of range, raises a ConfigError in one line (instead of a bare TypeError
    from the call, or a failure deep in the loader).
    """
    return DATASETS.create(name, **options)
