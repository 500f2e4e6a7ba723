"""Query-free attack — He, Zhang and Lee, ACSAC 2019.

The attacker has neither the edge's weights nor query access, only its architecture, the cloud
half it runs, and auxiliary labelled data. It trains a *shadow* edge ``f'`` so that the frozen
cloud classifies through it:

    f' = argmin  mean CE(cloud(f'(x_aux)), y_aux)      (cloud fixed)

which pushes ``f'`` towards producing features the cloud understands, i.e. towards the real edge's
feature space, and then runs rMLE (:func:`~splitveil.attacks.rmle.rmle_invert`) against ``f'``.

The cloud is never trained: the attacker uses its own frozen copy (eval mode, no gradients kept),
so the deployed cloud's parameters, buffers and ``.grad`` are untouched by construction. The shadow
starts from a re-initialisation drawn from ``seed`` (the view's copy is only the structure), and
after training is put back in the mode the deployed edge was in.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks.base import Attack, AttackerView, Capability, _reinitialised
from splitveil.attacks.registry import ATTACKS
from splitveil.attacks.rmle import Preset, RMLEOverrides, RMLESettings, resolve_settings, rmle_invert
from splitveil.attacks.training import train_on_pairs
from splitveil.options import NonNegative, Positive, PositiveInt
from splitveil.seeding import seeded


@ATTACKS.register("query-free")
class QueryFreeAttack(Attack):
    """Shadow edge trained through the frozen cloud on auxiliary data, then rMLE against it.

    Options: ``shadow_epochs``, ``shadow_batch_size``, ``shadow_lr`` train the shadow; ``preset``,
    ``steps``, ``lr`` and ``tv_weight`` configure rMLE exactly as for :class:`WhiteBoxRMLE`.
    """

    requires = frozenset({Capability.CLOUD_MODEL, Capability.EDGE_ARCHITECTURE, Capability.AUX_DATA})

    def __init__(
        self,
        view: AttackerView,
        *,
        seed: int = 0,
        progress: bool = True,
        shadow_epochs: PositiveInt = 10,
        shadow_batch_size: PositiveInt = 64,
        shadow_lr: Positive = 1e-3,
        preset: Preset = "auto",
        steps: PositiveInt | None = None,
        lr: Positive | None = None,
        tv_weight: NonNegative | None = None,
    ) -> None:
        super().__init__(view)
        self.seed, self.progress = seed, progress
        self.shadow_epochs, self.shadow_batch_size, self.shadow_lr = shadow_epochs, shadow_batch_size, shadow_lr
        self.preset: Preset = preset
        self.overrides: RMLEOverrides = {"steps": steps, "lr": lr, "tv_weight": tv_weight}
        self.shadow: nn.Module | None = None
        self.history: list[float] = []  # mean cross-entropy of the cloud through the shadow, per epoch

    def fit(self) -> QueryFreeAttack:
        architecture = self.view.edge_architecture
        with seeded(self.seed):
            shadow = _reinitialised(architecture)
        cloud = copy.deepcopy(self.view.cloud).eval().requires_grad_(False)
        aux = self.view.aux
        self.history = train_on_pairs(
            shadow,
            aux.images,
            aux.labels,
            loss=F.cross_entropy,
            head=cloud,
            epochs=self.shadow_epochs,
            batch_size=self.shadow_batch_size,
            lr=self.shadow_lr,
            seed=self.seed,
            description="query-free shadow edge",
            progress=self.progress,
        )
        shadow.train(architecture.training)
        self.shadow = shadow
        return self

    def settings_for(self, feature_shape: tuple[int, ...]) -> RMLESettings:
        """The rMLE settings used to invert features of ``feature_shape`` (per sample)."""
        return resolve_settings(
            self.preset, feature_shape=feature_shape, input_shape=self.view.input_shape, **self.overrides
        )

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        if self.shadow is None:
            raise RuntimeError("QueryFreeAttack.invert() needs a trained shadow edge: call fit() first")
        settings = self.settings_for(tuple(z.shape[1:]))
        return rmle_invert(
            self.shadow,
            z,
            input_shape=self.view.input_shape,
            steps=settings.steps,
            lr=settings.lr,
            tv_weight=settings.tv_weight,
            seed=self.seed,
            progress=self.progress,
        )
