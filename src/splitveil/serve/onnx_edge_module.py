"""An exported edge file as the edge of a split, so that the audit attacks what a device really runs.

``splitveil attack SPEC --cut C --edge-onnx DIR/edge.int8.onnx`` puts :class:`OnnxEdgeModule` where
the deployment's torch edge was and keeps its torch cloud half. The targets' features and every
query the attacker makes are then computed by ONNX Runtime from the file: the figures are those of
the float32 or int8 artefact, not of the torch weights it was exported from.

What an ONNX edge gives an attacker is queries (images in, features out), run forward only. It has
no gradients and is no torch module that could be re-initialised, so an attack that needs the
edge's weights (white-box) or its architecture is refused, by name (:func:`check_black_box`).

As on a device, a noisy edge draws fresh noise at every call: its random ops run in a session
seeded from the operating system's CSPRNG (:func:`~splitveil.edge.secure_session`), so its draws,
unlike the torch edge's, are not reproduced by the audit's seed. A salted edge called without salts
draws them from torch's global generator, as the torch salted edge does in an audit
(:class:`~splitveil.salt.layer.SaltedEdge`), and decodes the cloud's answer with the salt table the
file carries.

The file must have been exported from the deployment it stands in for: :func:`check_edge_metadata`
compares what the file records (cut, spec, trained model, defense and strength, shapes) with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from splitveil.attacks import ATTACKS, Attack, Capability
from splitveil.edge.runtime import OnnxEdge, read_onnx_metadata
from splitveil.errors import CapabilityError, CheckpointError
from splitveil.salt.sources import SaltSource, TorchSalts
from splitveil.seeding import seeded
from splitveil.split import SplitModel

if TYPE_CHECKING:  # the audit imports this module: it stays clear of training and export
    from splitveil.config import ExperimentSpec
    from splitveil.serve.deployment import Deployment

#: Images per ONNX Runtime call: bounds the memory a large query set takes.
BATCH = 512
#: What an attack may need of the edge that an ONNX file cannot give, and why.
NEEDS_TORCH_EDGE = {
    Capability.EDGE_WEIGHTS: "the edge's weights and gradients (white-box)",
    Capability.EDGE_ARCHITECTURE: "the edge's architecture as a torch module to re-initialise",
}
#: The defense fields that decide a defended edge's weights (a spec's label and strengths list do not);
#: ``task_only_epochs`` joins them when set, so that edges exported before it existed still match.
DEFENSE_FIELDS = (
    "name",
    "retrain",
    "init",
    "epochs",
    "lr",
    "schedule",
    "warmup_epochs",
    "distill",
    "distill_temperature",
)
_MISSING: Any = object()


class OnnxEdgeModule(nn.Module):
    """The edge in an exported ONNX file (float32 or int8), run by ONNX Runtime: a forward-only torch edge.

    Images ``[N, C, H, W]`` in, features out, in batches of :data:`BATCH`; no gradients.

    Example::

        split = SplitModel(load_onnx_edge("bundle/edge.int8.onnx"), deployed.split.cloud, cut_name="relu22")
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        super().__init__()
        self.path = Path(path)
        self.runtime = OnnxEdge(path, threads=threads)  # checks that the file is an edge half
        self.metadata = self.runtime.metadata
        self.input_shape = self.runtime.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def _run(self, x: torch.Tensor, salts: np.ndarray | None) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise CapabilityError(
                f"the ONNX edge {self.path.name} computes no gradients: an attack that differentiates through "
                "the edge (white-box) cannot run on it; use a black-box attack, or the torch edge"
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"the ONNX edge takes images of shape [N, {', '.join(map(str, self.input_shape))}], not {list(x.shape)}"
            )
        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if len(images) == 0:
            return torch.empty((0, *self.metadata["feature_shape"]), device=x.device)
        outputs = []
        for start in range(0, len(images), BATCH):
            feeds = {"image": images[start : start + BATCH]}
            if salts is not None:
                feeds["salt"] = salts[start : start + BATCH]
            outputs.append(np.asarray(self.runtime.session.run(None, feeds)[0]))
        return torch.from_numpy(np.concatenate(outputs)).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.path}, precision={self.metadata.get('precision', 'float32')}"


class SaltedOnnxEdgeModule(OnnxEdgeModule):
    """A salted edge file: ``forward(x, salt)``, or ``forward(x)`` drawing the salts from ``source``.

    ``source`` defaults to torch's global generator, as the torch salted edge's does, so that an
    audit seeded as the bench's draws reproducible salts. It implements
    :class:`~splitveil.client_side.SecretKeepingEdge`, so whatever plays the device decodes the
    cloud's answer with the salt table in the file.
    """

    def __init__(self, path: str | Path, *, threads: int = 1, source: SaltSource | None = None) -> None:
        super().__init__(path, threads=threads)
        salt = self.metadata.get("salt")
        if salt is None:
            raise CheckpointError(f"{path} takes no salt; load it with load_onnx_edge")
        self.table = torch.tensor(salt["table"], dtype=torch.long)
        self.source = source if source is not None else TorchSalts(len(self.table))
        if self.source.num_salts != len(self.table):
            raise ValueError(
                f"the salt source draws {self.source.num_salts} salts but the edge takes {len(self.table)}"
            )

    def forward(self, x: torch.Tensor, salt: torch.Tensor | None = None) -> torch.Tensor:
        salt = self.check_salt(self.source.draw(len(x)) if salt is None else salt, len(x))
        return self._run(x, salt.numpy())

    @property
    def num_secrets(self) -> int:
        return len(self.table)

    @property
    def secret_source(self) -> SaltSource:
        return self.source

    @property
    def answer_classes(self) -> int:
        return int(self.table.shape[1])

    def decode_answer(self, answer: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        """The cloud's salted logits over the true classes: ``decoded[:, y] = answer[:, table[salt, y]]``."""
        return answer.gather(1, self.table[self.check_salt(secret, len(answer))].to(answer.device))

    def check_salt(self, salt: torch.Tensor, count: int) -> torch.Tensor:
        """``salt`` as a long tensor of ``count`` values in ``range(num_secrets)``, or a clear ValueError."""
        salt = torch.as_tensor(salt).cpu()
        if salt.shape != (count,) or salt.dtype.is_floating_point:
            raise ValueError(f"expected {count} integer salts (one per sample), got shape {tuple(salt.shape)}")
        if count and (int(salt.min()) < 0 or int(salt.max()) >= self.num_secrets):
            raise ValueError(f"salts must lie in [0, {self.num_secrets}), got {salt.min()}..{salt.max()}")
        return salt.long()


def load_onnx_edge(path: str | Path, *, threads: int = 1) -> OnnxEdgeModule:
    """The edge in ``path`` as a torch module: :class:`SaltedOnnxEdgeModule` when it takes a salt."""
    if read_onnx_metadata(path).get("salt") is not None:
        return SaltedOnnxEdgeModule(path, threads=threads)
    return OnnxEdgeModule(path, threads=threads)


def onnx_edge_split(deployment: Deployment, path: str | Path, *, threads: int = 1) -> SplitModel:
    """``deployment``'s split with the edge in ``path`` in place of its torch edge, once the file's
    metadata shows it was exported from ``deployment`` (CheckpointError otherwise)."""
    check_edge_metadata(path, deployment_record(deployment))
    split = deployment.deployed.split
    return SplitModel(load_onnx_edge(path, threads=threads), split.cloud, cut_name=split.cut_name).eval()


def check_black_box(attack_name: str) -> None:
    """Refuse (CapabilityError) an attack that needs more of the edge than an ONNX file gives."""
    requires = cast(type[Attack], ATTACKS.get(attack_name)).requires  # attacks register their classes
    needs = [why for capability, why in NEEDS_TORCH_EDGE.items() if capability in requires]
    if needs:
        raise CapabilityError(
            f"attack {attack_name!r} needs {' and '.join(needs)}, which an ONNX edge file does not give (ONNX "
            f"Runtime runs it forward only); attacks that only query the edge run on it: "
            f"{', '.join(black_box_attacks())}; or attack the torch edge (without --edge-onnx)"
        )


def black_box_attacks() -> list[str]:
    """The registered attacks that need nothing of the edge but its outputs."""
    return [
        name for name in ATTACKS.names() if not cast(type[Attack], ATTACKS.get(name)).requires & NEEDS_TORCH_EDGE.keys()
    ]


def spec_record(spec: ExperimentSpec, cut_name: str) -> dict[str, Any]:
    """What an edge file exported from ``spec`` at ``cut_name`` records of them (dotted field -> value):
    enough to refuse a file of another model, seed or cut before anything is trained."""
    return {
        "half": "edge",
        "cut": cut_name,
        "spec": {"model": spec.model.model_dump(mode="json"), "seed": spec.seed, "data": spec.data.name},
    }


def deployment_record(deployment: Deployment) -> dict[str, Any]:
    """What an edge file exported from ``deployment`` records of it (dotted field -> value)."""
    split, data = deployment.deployed.split, deployment.trained.data
    with torch.no_grad(), seeded():  # a defense draws noise or salts: the caller's streams stay as they were
        feature_shape = list(split.edge(data.test.images[:1]).shape[1:])
    record = {
        **spec_record(deployment.spec, split.cut_name),
        "base_cache_key": deployment.trained.metadata["cache_key"],
        "input_shape": list(data.input_shape),
        "feature_shape": feature_shape,
        "num_classes": data.num_classes,
        "strength": deployment.strength,
    }
    if deployment.defense_spec is None:
        return {**record, "defense": None}
    defense = deployment.defense_spec.model_dump(mode="json")
    # The file records every option the defense resolved; those the spec sets must be among them.
    options = {f"defense.options.{key}": value for key, value in defense["options"].items()}
    fields = [*DEFENSE_FIELDS, *(["task_only_epochs"] if "task_only_epochs" in defense else [])]
    return {**record, **{f"defense.{key}": defense[key] for key in fields}, **options}


def check_edge_metadata(path: str | Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The edge file's metadata, once every field of ``expected`` (dotted name -> value) agrees with it.

    Raises CheckpointError, naming each field that differs, when the file was exported from another
    deployment or is not an edge half.
    """
    metadata = read_onnx_metadata(path)
    differing = [
        f"{field} ({_clip(_lookup(metadata, field))} in the file, {_clip(value)} here)"
        for field, value in expected.items()
        if _lookup(metadata, field) != value
    ]
    if differing:
        raise CheckpointError(
            f"{path} was exported from another deployment than the one named: {'; '.join(differing)}; name the "
            "spec (and seed), --cut, --defense and --strength it was exported from, or export this deployment "
            "with `splitveil export ... --onnx [--int8]`"
        )
    return metadata


def _lookup(metadata: dict[str, Any], field: str) -> Any:
    value: Any = metadata
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _clip(value: Any, limit: int = 80) -> str:
    text = "missing" if value is _MISSING else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
