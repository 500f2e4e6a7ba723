"""Deployment bundles: a deployed split written as two halves that live on different machines.

``export_bundle`` writes ``DIR/edge`` (for the device) and ``DIR/cloud`` (for the server), each a
checkpoint of safetensors weights plus JSON metadata. Each half's metadata holds what is needed to
rebuild its architecture — the spec's model, the cut, the defense and its structural record — so a
half is loaded without the other half's weights. Client secrets (a salt key, see
:attr:`Defense.client_options`) are written to the edge half only: the cloud's files never see them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from splitveil.checkpoint import environment_versions, load_weights, read_metadata, save_checkpoint
from splitveil.config import DefenseSpec, ExperimentSpec
from splitveil.defenses import create_defense
from splitveil.defenses.base import Defense
from splitveil.deploy import DeployedSplit
from splitveil.errors import CheckpointError
from splitveil.experiment import TrainedModel
from splitveil.models import create_model
from splitveil.split import SplitModel, cut

Half = Literal["edge", "cloud"]
#: 2: the defense's options are written resolved (every constructor option, defaults included), so a
#: later change of a default cannot change what a bundle means. Format 1 wrote them as configured.
BUNDLE_FORMAT = 2
#: Defaults that changed since format 1: a format-1 bundle that left them out was built with these.
_FORMAT_1_DEFAULTS: dict[str, dict[str, Any]] = {"salted": {"scheme": "permutation"}}


@dataclass
class LoadedHalf:
    """One half of a deployed split, rebuilt from its bundle directory."""

    module: nn.Module
    metadata: dict[str, Any]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one sample's feature (what crosses the wire), without the batch axis."""
        return tuple(self.metadata["feature_shape"])

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])


def export_bundle(
    out: str | Path,
    *,
    spec: ExperimentSpec,
    trained: TrainedModel,
    deployed: DeployedSplit,
    defense_spec: DefenseSpec | None,
    strength: float,
) -> Path:
    """Write ``deployed`` (the split of ``trained`` as :func:`splitveil.deploy.deploy` built it) to ``out``."""
    out = Path(out)
    split = deployed.split.eval()
    data = trained.data
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        feature_shape = tuple(split.edge(data.test.images[:1]).shape[1:])
    common: dict[str, Any] = {
        "bundle_format": BUNDLE_FORMAT,
        "spec": {"model": spec.model.model_dump(mode="json"), "seed": spec.seed, "data": spec.data.name},
        "cut": split.cut_name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "feature_shape": list(feature_shape),
        "strength": strength,
        "finalize": deployed.finalize_record,
        "accuracy": deployed.accuracy,
        "base_cache_key": trained.metadata["cache_key"],
        "versions": environment_versions(),
    }
    defense = None if defense_spec is None else _resolved(defense_spec.model_dump(mode="json"), deployed.defense)
    save_checkpoint(out / "edge", split.edge, {**common, "half": "edge", "defense": defense})
    save_checkpoint(out / "cloud", split.cloud, {**common, "half": "cloud", "defense": _without_secrets(defense)})
    return out


def load_half(path: str | Path, half: Half) -> LoadedHalf:
    """The ``half`` of the bundle at ``path`` (the bundle directory or the half's own directory)."""
    path = Path(path)
    directory = path / half if (path / half).is_dir() else path
    metadata = read_metadata(directory)
    if metadata.get("bundle_format") not in (1, BUNDLE_FORMAT) or metadata.get("half") not in ("edge", "cloud"):
        raise CheckpointError(f"{directory} is not a splitveil deployment bundle; create one with `splitveil export`")
    if metadata["half"] != half:
        raise CheckpointError(f"{directory} holds the {metadata['half']} half, but the {half} half is needed")
    split = _skeleton(metadata)
    module = split.edge if half == "edge" else split.cloud
    load_weights(directory, module)
    return LoadedHalf(module=module.eval(), metadata=metadata)


def _skeleton(metadata: dict[str, Any]) -> SplitModel:
    """The deployed split's architecture with placeholder weights (each half's are loaded after)."""
    model_spec = metadata["spec"]["model"]
    with torch.random.fork_rng(devices=[]):
        model = create_model(
            model_spec["name"],
            input_shape=tuple(metadata["input_shape"]),
            num_classes=metadata["num_classes"],
            **model_spec["options"],
        )
    split = cut(model, at=metadata["cut"])
    if metadata["defense"] is None:
        return split
    defense_spec = DefenseSpec.model_validate(metadata["defense"])
    options = defense_spec.options
    if metadata["bundle_format"] == 1:
        options = {**_FORMAT_1_DEFAULTS.get(defense_spec.name, {}), **options}
    defense = create_defense(defense_spec.name, strength=metadata["strength"], **options)
    split = defense.apply(split)
    defense.restore(split, metadata["finalize"])
    return split


def _resolved(defense: dict[str, Any], instance: Defense) -> dict[str, Any]:
    """``defense`` with every option the defense's constructor takes, as the built defense resolved it."""
    accepted = inspect.signature(type(instance).__init__).parameters
    resolved = {k: v for k, v in instance.options().items() if k in accepted and k != "strength"}
    return {**defense, "options": {**resolved, **defense["options"]}}


def _without_secrets(defense: dict[str, Any] | None) -> dict[str, Any] | None:
    if defense is None:
        return None
    from splitveil.defenses import DEFENSES

    secrets = DEFENSES.get(defense["name"]).client_options
    return {**defense, "options": {k: v for k, v in defense["options"].items() if k not in secrets}}
