"""Train the model a spec describes, or load it from the checkpoint cache if it was trained before.

The cache key hashes everything that determines the weights: model name and options, dataset
name, split options and a fingerprint of the training images, the training config and the seed.
Where the data files live does not matter; what they contain does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from splitveil.checkpoint import (
    CACHE_FORMAT,
    CheckpointCache,
    config_hash,
    environment_versions,
    load_weights,
    read_metadata,
)
from splitveil.config import ExperimentSpec
from splitveil.data import DatasetSplits, load_dataset
from splitveil.errors import CheckpointError
from splitveil.models import create_model
from splitveil.seeding import seeded
from splitveil.split import cut
from splitveil.train import fit


@dataclass
class TrainedModel:
    """A trained model with its checkpoint's metadata; ``from_cache`` says whether it was reused."""

    model: nn.Module
    data: DatasetSplits
    metadata: dict[str, Any]
    checkpoint: Path
    from_cache: bool

    @property
    def test_accuracy(self) -> float:
        return float(self.metadata["metrics"]["test_accuracy"])


def build_model(spec: ExperimentSpec, data: DatasetSplits) -> nn.Module:
    """The spec's zoo model, sized to the dataset, initialised from the spec's seed."""
    with seeded(spec.seed):
        return create_model(
            spec.model.name, input_shape=data.input_shape, num_classes=data.num_classes, **spec.model.options
        )


def check_cuts(spec: ExperimentSpec, data: DatasetSplits, cuts: list[str]) -> None:
    """Raise ``InvalidCutError`` for any of ``cuts`` the spec's model lacks, before anything is trained."""
    model = build_model(spec, data)
    for name in cuts:
        cut(model, at=name)


def data_fingerprint(data: DatasetSplits) -> str:
    """A hash of the training and validation images and labels (what the weights depend on)."""
    digest = hashlib.sha256()
    for part in (data.train, data.val):
        digest.update(part.images.numpy().tobytes())
        digest.update(part.labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(spec: ExperimentSpec, data: DatasetSplits) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "model": spec.model.model_dump(mode="json"),
        "data": spec.data.model_dump(mode="json", exclude={"data_dir"}),
        "data_fingerprint": data_fingerprint(data),
        "train": spec.train.model_dump(mode="json"),
        "seed": spec.seed,
    }
    return config_hash(payload)


def train_or_load(
    spec: ExperimentSpec,
    *,
    cache: CheckpointCache | None = None,
    data: DatasetSplits | None = None,
    progress: bool = True,
    cached_only: bool = False,
) -> TrainedModel:
    """Return the spec's trained model, training it only if no cached checkpoint matches.

    ``cached_only`` makes a missing checkpoint an error instead (a bench cell whose dependency must
    have trained it already).
    """
    cache = cache or CheckpointCache.default()
    data = data or load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    key = cache_key(spec, data)
    model = build_model(spec, data)
    entry = cache.path(key)
    if cache.contains(key):
        load_weights(entry, model)
        return TrainedModel(model.eval(), data, read_metadata(entry), entry, from_cache=True)
    if cached_only:
        raise CheckpointError(
            f"the trained model is not in the checkpoint cache at {entry}; its train cell must run first "
            "(on a Ray cluster of several machines, --cache-dir must be on a shared filesystem)" + cache.miss_suffix()
        )
    result = fit(model, data, spec.train, seed=spec.seed, progress=progress)
    metadata = {
        "cache_key": key,
        "spec": spec.model_dump(mode="json"),
        "seed": spec.seed,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "metrics": result.metrics(),
        "history": [record.__dict__ for record in result.history],
        "versions": environment_versions(),
    }
    cache.store(key, model, metadata)
    return TrainedModel(model.eval(), data, metadata, entry, from_cache=False)
