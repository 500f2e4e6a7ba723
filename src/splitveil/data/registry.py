"""The dataset registry and :func:`load_dataset`, the one entry point specs and the CLI use.

Every loader has the same keyword-only signature::

    load(*, data_dir=None, seed=0, aux_fraction=..., val_fraction=..., limit=None) -> DatasetSplits

so an experiment spec can name any dataset with the same options.
"""

from __future__ import annotations

import inspect
from typing import Any

from splitveil.data.base import DatasetSplits
from splitveil.errors import ConfigError
from splitveil.registry import Registry

DATASETS: Registry[DatasetSplits] = Registry("dataset")


def load_dataset(name: str, **options: Any) -> DatasetSplits:
    """Load the dataset registered as ``name`` with loader ``options``.

    Unknown names raise UnknownNameError listing the registered ones; unknown options raise a
    ConfigError listing the valid ones (instead of a bare TypeError from the call).
    """
    loader = DATASETS.get(name)
    parameters = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(parameters)}"
        )
    return loader(**options)
