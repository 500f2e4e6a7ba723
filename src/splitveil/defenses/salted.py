"""Salted DNNs — output privacy with a client-side salt (Malekzadeh and Kawsar, HotMobile 2024).

The client draws a secret salt ``s`` per query; a salted layer on the edge mixes it into the
features, and the network is trained so that the cloud's argmax is the *salted* class ``T[s, y]``
(:mod:`splitveil.salt.codes`: the paper's cyclic shift, or a keyed per-salt permutation). The
client decodes ``y = T[s]⁻¹(argmax)``; the cloud computes the answer without being able to read it.
The salt never leaves the client: the cloud half takes ``z`` alone.

``strength`` is the width of the salt injection: the salted layer gets
``max(1, round(strength · C))`` salt maps, ``C`` being the channels (or features) the following
layer took before [ours: the paper uses a few maps; the knob makes "how much salt" sweepable].
Strength 0 is the identity (no salt). The defense protects the output, not the input: input
attacks see the salt only as noise in ``z``.

Options:
    salt_at: the edge layer after which the salt enters (default: the earliest valid one). It must
        be followed on the edge by a convolution or linear layer, through activations and pooling
        only, so that the salt is mixed before it crosses the network.
    scheme: ``"latin"`` (default; a keyed Latin square), ``"permutation"`` (keyed, independent per
        salt) or ``"shift"`` (the paper's). See :mod:`splitveil.salt.codes`: under the Latin square
        and the shift the argmax alone says nothing about the label; under independent rows it does.
    num_salts: salts to draw from (default K; the shift needs exactly K, the Latin square a multiple of K).
    key: the client secret the keyed tables (latin, permutation) are derived from [ours]. Keep it with the client.
    tile: the salt maps' pattern period in pixels (the transposed convolution's kernel and stride).
    salt_scale: the initial std of the salt maps [ours: unit scale, so the salt is heard from the start].
    smoothing: [ours] weight of a uniform cross-entropy term on the salted logits (label smoothing
        with ε = w / (1 + w)). A model trained on hard targets keeps its confusion structure in the
        non-top logits (a shirt's runner-ups are T-shirt, pullover and coat, at permuted positions),
        from which a cloud with labelled queries reads the salt, and with it the label; smoothing
        flattens them. 0 (default) is the paper's training.
    num_classes: K (default: the output size of the cloud's last linear layer).
    seed: the initial weights of the salt maps and of the widened layer's new inputs.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import fx, nn

from splitveil.defenses.base import Defense
from splitveil.defenses.registry import register_defense
from splitveil.errors import ConfigError, InvalidCutError
from splitveil.options import NonNegative, Positive, PositiveInt
from splitveil.salt.codes import SaltCode, latin_code, permutation_code, shift_code
from splitveil.salt.layer import SaltedEdge, SaltMaps, SaltVector
from splitveil.salt.sources import TorchSalts
from splitveil.salt.split import SaltedSplit
from splitveil.seeding import seeded
from splitveil.split import SplitModel, cut, trace, valid_cuts
from splitveil.surgery import first_layer, widen_input
from splitveil.train import Batch

Scheme = Literal["latin", "permutation", "shift"]


@register_defense
class SaltedDefense(Defense):
    """A salted layer on the edge and a salted output space (see the module docstring)."""

    name = "salted"
    requires_training = True
    client_options = ("key",)

    def __init__(
        self,
        *,
        strength: NonNegative = 0.25,
        salt_at: str | None = None,
        scheme: Scheme = "latin",
        num_salts: Annotated[int, Field(ge=2)] | None = None,
        key: int | str = 0,
        tile: PositiveInt = 4,
        salt_scale: Positive = 1.0,
        smoothing: NonNegative = 0.0,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(strength=strength)
        self.salt_at = salt_at
        self.scheme: Scheme = scheme
        self.num_salts = num_salts
        self.key = key
        self.tile = tile
        self.salt_scale = float(salt_scale)
        self.smoothing = float(smoothing)
        self.num_classes = num_classes
        self.seed = seed

    def apply(self, split: SplitModel) -> SplitModel:
        """A :class:`SaltedSplit` with freshly built salt layers; ``split`` itself at strength 0."""
        if self.strength == 0:
            return split
        edge = trace(split.edge)
        salt_at = self.salt_at or _first_salt_point(edge)
        try:
            pieces = cut(edge, at=salt_at)
        except InvalidCutError:
            raise ConfigError(self._bad_point(salt_at, edge)) from None
        after = pieces.cloud
        try:
            _, layer = first_layer(cast(fx.GraphModule, after))  # cut() halves are GraphModules
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: salt_at={salt_at!r}: {exc}") from None
        code = self._code(split.cloud)
        original = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
        channels = max(1, round(self.strength * original))
        with seeded(self.seed):  # the same salt layers for the same seed; the caller's stream untouched
            widen_input(cast(fx.GraphModule, after), channels)
            if isinstance(layer, nn.Conv2d):
                maps: SaltMaps | SaltVector = SaltMaps(
                    num_salts=code.num_salts, channels=channels, tile=self.tile, scale=self.salt_scale
                )
            else:
                maps = SaltVector(num_salts=code.num_salts, channels=channels, scale=self.salt_scale)
        salted = SaltedEdge(
            before=pieces.edge,
            maps=maps,
            after=after,
            code=code,
            source=TorchSalts(code.num_salts),
            salt_at=salt_at,
        )
        device = next(split.parameters()).device
        deployed = SaltedSplit(salted.to(device), split.cloud, cut_name=split.cut_name)
        deployed.train(split.training)
        return deployed

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The smoothing term: the mean over classes of −log p, the same for salted or decoded logits."""
        if self.strength == 0 or self.smoothing == 0:
            return {}
        return {"smoothing": self.smoothing * -F.log_softmax(logits, dim=1).mean(dim=1).mean()}

    def _code(self, cloud: nn.Module) -> SaltCode:
        classes = self.num_classes or _output_size(cloud)
        if self.scheme == "shift":
            if self.num_salts not in (None, classes):
                raise ConfigError(
                    f"{self.name}: the shift code has exactly K={classes} salts, got num_salts={self.num_salts}"
                )
            return shift_code(classes)
        if self.scheme == "latin":
            try:
                return latin_code(classes, num_salts=self.num_salts or classes, key=self.key)
            except ValueError as exc:  # the code checks its salts; the config error names the defense
                raise ConfigError(f"{self.name}: {exc}") from None
        return permutation_code(classes, num_salts=self.num_salts or classes, key=self.key)

    def _bad_point(self, salt_at: str, edge: fx.GraphModule) -> str:
        points = ", ".join(salt_points(edge)) or "none (the edge has no conv or linear layer after its first)"
        return f"{self.name}: cannot salt after {salt_at!r}; salt points of this edge: {points}"


def salt_points(edge: nn.Module) -> list[str]:
    """The points of ``edge`` after which a salt can enter and still be mixed on the edge."""
    points = []
    for name in valid_cuts(edge):
        try:
            first_layer(cast(fx.GraphModule, cut(edge, at=name).cloud))
        except (ConfigError, InvalidCutError):
            continue
        points.append(name)
    return points


def _first_salt_point(edge: fx.GraphModule) -> str:
    points = salt_points(edge)
    if not points:
        raise ConfigError(
            "salted: this edge has no point followed by a conv or linear layer on the edge; "
            "cut deeper so that the salt is mixed before it crosses the network"
        )
    return points[0]


def _output_size(cloud: nn.Module) -> int:
    last = [m for m in cloud.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not last:
        raise ConfigError("salted: cannot tell the number of classes from the cloud; pass num_classes")
    layer = last[-1]
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
