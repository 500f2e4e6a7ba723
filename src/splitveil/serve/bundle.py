"""Deployment bundles: a deployed split written as two halves that live on different machines.

``export_bundle`` writes ``DIR/edge`` (for the device) and ``DIR/cloud`` (for the server), each a
checkpoint of safetensors weights plus JSON metadata. Each half's metadata holds what is needed to
rebuild its architecture — the spec's model, the cut, the defense and its structural record — so a
half is loaded without the other half's weights. Client secrets (a salt key, see
:attr:`Defense.client_options`) are written to the edge half only: the cloud's files never see them.

``load_half`` trusts neither file of a half (a server loads what an operator was handed): the
metadata is read with a size cap and checked field by field, the architecture is built under a
:class:`~splitveil.serve.tensor_budget.TensorBudget` (so options asking for terabytes are refused
before they are allocated), ``feature_shape`` must be what the edge really outputs, the weights
must match the built module's names, dtypes and shapes and be finite, and a dry forward pass of one
sample must give the declared shape. Only then is a half returned, and a server ready.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from splitveil.checkpoint import METADATA_FILE, environment_versions, save_checkpoint
from splitveil.config import DefenseSpec, ExperimentSpec
from splitveil.defenses import create_defense
from splitveil.defenses.base import Defense
from splitveil.deploy import DeployedSplit
from splitveil.errors import CheckpointError
from splitveil.experiment import TrainedModel
from splitveil.models import create_model
from splitveil.seeding import seeded
from splitveil.serve.bundle_metadata import check_bundle_metadata, read_bundle_metadata
from splitveil.serve.bundle_weights import load_bundle_weights
from splitveil.serve.tensor_budget import BudgetExceeded, TensorBudget
from splitveil.split import SplitModel, cut

Half = Literal["edge", "cloud"]
#: 2: the defense's options are written resolved (every constructor option, defaults included), so a
#: later change of a default cannot change what a bundle means. Format 1 wrote them as configured.
BUNDLE_FORMAT = 2
#: The most bytes of tensors that building a half may create: the whole split with placeholder
#: weights, then one sample through it. The zoo's largest split needs a few megabytes.
MAX_BUILD_BYTES = 4 << 30
_FIX = "export the bundle again with `splitveil export`"


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
    with torch.no_grad(), seeded():
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
        "plugins": list(spec.plugins),
    }
    defense = None if defense_spec is None else _resolved(defense_spec.model_dump(mode="json"), deployed.defense)
    save_checkpoint(out / "edge", split.edge, {**common, "half": "edge", "defense": defense})
    save_checkpoint(out / "cloud", split.cloud, {**common, "half": "cloud", "defense": _without_secrets(defense)})
    return out


def load_half(path: str | Path, half: Half) -> LoadedHalf:
    """The ``half`` of the bundle at ``path`` (the bundle directory or the half's own directory)."""
    path = Path(path)
    directory = path / half if (path / half).is_dir() else path
    metadata = read_bundle_metadata(directory)
    if metadata.get("half") not in ("edge", "cloud") or not isinstance(metadata.get("bundle_format"), int):
        raise CheckpointError(f"{directory} is not a splitveil deployment bundle; create one with `splitveil export`")
    if metadata["bundle_format"] != BUNDLE_FORMAT:
        raise CheckpointError(
            f"{directory} is a bundle of format {metadata['bundle_format']}, written by another splitveil; this one "
            f"reads format {BUNDLE_FORMAT}: export it again with `splitveil export` (or serve it with the "
            "splitveil that wrote it)"
        )
    if metadata["half"] != half:
        raise CheckpointError(f"{directory} holds the {metadata['half']} half, but the {half} half is needed")
    meta_path = directory / METADATA_FILE
    check_bundle_metadata(metadata, meta_path)
    with TensorBudget(max_bytes=MAX_BUILD_BYTES):
        split = _skeleton(metadata, meta_path).eval()  # eval: batch norm and dropout as served
        # The edge's real output, not the file's word: the server sizes its body limit by it.
        with _blaming(meta_path, "input_shape"):
            produced = _run(split.edge, (1, *metadata["input_shape"]))
    if list(produced.shape[1:]) != metadata["feature_shape"]:
        raise CheckpointError(
            f"bundle file {meta_path}: feature_shape {metadata['feature_shape']} is not what the edge of "
            f"{metadata['spec']['model']['name']} cut at {metadata['cut']!r} outputs "
            f"({list(produced.shape[1:])}); {_FIX}"
        )
    module = split.edge if half == "edge" else split.cloud
    load_bundle_weights(directory, module)
    _dry_run(module.eval(), half, metadata, meta_path)
    return LoadedHalf(module=module, metadata=metadata)


def _skeleton(metadata: dict[str, Any], meta_path: Path) -> SplitModel:
    """The deployed split's architecture with placeholder weights (each half's are loaded after)."""
    model_spec = metadata["spec"]["model"]
    with _blaming(meta_path, "spec.model"), seeded():
        model = create_model(
            model_spec["name"],
            input_shape=tuple(metadata["input_shape"]),
            num_classes=metadata["num_classes"],
            **model_spec["options"],
        )
    with _blaming(meta_path, "cut"):
        split = cut(model, at=metadata["cut"])
    if metadata["defense"] is None:
        return split
    with _blaming(meta_path, "defense"):
        defense_spec = DefenseSpec.model_validate(metadata["defense"])
        defense = create_defense(defense_spec.name, strength=metadata["strength"], **defense_spec.options)
        split = defense.apply(split)
    with _blaming(meta_path, "finalize"):
        defense.restore(split, metadata["finalize"])
    return split


def _dry_run(module: nn.Module, half: Half, metadata: dict[str, Any], meta_path: Path) -> None:
    """One sample of the shape the half takes must come out finite, of the shape the other half takes."""
    if half == "edge":
        shapes = ("input_shape", metadata["input_shape"], "feature_shape", metadata["feature_shape"])
    else:
        shapes = ("feature_shape", metadata["feature_shape"], "num_classes", [metadata["num_classes"]])
    given, given_shape, wanted, wanted_shape = shapes
    with TensorBudget(max_bytes=MAX_BUILD_BYTES), _blaming(meta_path, given):
        output = _run(module, (1, *given_shape))
    if list(output.shape) != [1, *wanted_shape]:
        raise CheckpointError(
            f"bundle file {meta_path}: the {half} half turns one sample of {given} {given_shape} into "
            f"{list(output.shape[1:])}, not {wanted} {wanted_shape}; {_FIX}"
        )
    if not torch.isfinite(output).all():
        raise CheckpointError(f"bundle file {meta_path}: the {half} half's weights compute NaN or infinity; {_FIX}")


def _run(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """``module`` on ones of ``shape`` (zeros would leave every weight but the biases untried); the
    caller's random streams untouched (defenses draw noise and salts)."""
    with torch.no_grad(), seeded():
        output = module(torch.ones(shape))
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the module returned a {type(output).__name__}, not a tensor")
    return output


@contextmanager
def _blaming(meta_path: Path, field: str) -> Iterator[None]:
    """Turn any failure to build or run what ``field`` of an untrusted file describes into one line that names it."""
    try:
        yield
    except CheckpointError:
        raise
    except BudgetExceeded as exc:
        raise CheckpointError(f"bundle file {meta_path}: {field} asks for too large a model ({exc}); {_FIX}") from exc
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"bundle file {meta_path}: {field} does not build ({detail}); {_FIX}") from exc


def _resolved(defense: dict[str, Any], instance: Defense) -> dict[str, Any]:
    """``defense`` with every option the defense's constructor takes, as the built defense resolved it."""
    accepted = inspect.signature(type(instance).__init__).parameters
    resolved = {k: v for k, v in instance.options().items() if k in accepted and k != "strength"}
    return {**defense, "options": {**resolved, **defense["options"]}}


def _without_secrets(defense: dict[str, Any] | None) -> dict[str, Any] | None:
    if defense is None:
        return None
    from splitveil.defenses import DEFENSES

    defense_class = typing.cast(type[Defense], DEFENSES.get(defense["name"]))  # defenses register classes
    return {**defense, "options": defense_class.public_options(defense["options"])}
