"""A toy defense and a toy attack registered from outside splitveil, as a user's own package would.

Used by ``tests/test_plugins.py`` through a spec's ``plugins: [splitveil_toy_plugin]``; nothing under
``src/`` names them. The directory holding this file is put on ``PYTHONPATH`` by that test only.
"""

from __future__ import annotations

import torch
from torch import nn

from splitveil.attacks.base import Attack, AttackerView, Capability
from splitveil.attacks.registry import ATTACKS
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.split import SplitModel


class Scale(nn.Module):
    """Multiplies the feature by a constant; the cloud sees a rescaled but equally informative feature."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.factor


@register_defense
class ToyScaleDefense(Defense):
    """``toy-scale``: the feature times ``1 + strength`` (strength 0 is the identity, as required)."""

    name = "toy-scale"

    def __init__(self, *, strength: float = 1.0, offset: float = 1.0) -> None:
        super().__init__(strength=strength)
        self.offset = offset

    def apply(self, split: SplitModel) -> SplitModel:
        return split if self.strength == 0 else wrap_edge(split, Scale(self.offset + self.strength))

    def options(self) -> dict[str, object]:
        return {"offset": self.offset}


@ATTACKS.register("toy-aux-mean")
class AuxMeanAttack(Attack):
    """``toy-aux-mean``: answers every feature with the mean auxiliary image."""

    requires = frozenset({Capability.AUX_DATA})

    def __init__(self, view: AttackerView, *, seed: int = 0, progress: bool = False) -> None:
        super().__init__(view)
        self.image: torch.Tensor | None = None

    def fit(self) -> AuxMeanAttack:
        self.image = self.view.aux.images.mean(dim=0, keepdim=True)
        return self

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        assert self.image is not None, "fit() first"
        return self.image.expand(len(z), *self.image.shape[1:]).clone()
