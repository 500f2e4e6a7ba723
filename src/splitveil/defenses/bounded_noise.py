"""``bounded-noise``: calibrated noise on a bounded bottleneck, the fair noise baseline (issue 20).

The edge's feature is brought to a fixed per-sample scale (:class:`~splitveil.blocks.bounded_noise.
BoundedNoise`), then noised with a standard deviation of ``strength × bound`` per value: strength is
the noise's standard deviation relative to the signal's root-mean-square, which training cannot
change. The model trains with the noise in place (noise-aware), from the undefended weights or from
scratch as the spec says.
"""

from __future__ import annotations

import math
from typing import get_args

from splitveil.blocks.bounded_noise import BoundedNoise, BoundMode, NoiseLaw
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.errors import ConfigError
from splitveil.split import SplitModel


@register_defense
class BoundedNoiseDefense(Defense):
    """Per-sample bounded feature plus noise of ``strength × bound`` standard deviation; strength = relative std."""

    name = "bounded-noise"
    requires_training = True  # the cloud half must learn to read the bounded, noised feature

    def __init__(
        self, *, strength: float = 0.5, bound: float = 1.0, mode: BoundMode = "normalize", law: NoiseLaw = "gaussian"
    ) -> None:
        super().__init__(strength=strength)
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not (bound > 0 and math.isfinite(bound)):
            raise ConfigError(
                f"{self.name}: bound (the feature's root-mean-square) must be finite and > 0, got {bound!r}"
            )
        if mode not in get_args(BoundMode):
            raise ConfigError(f"{self.name}: mode must be one of {get_args(BoundMode)}, got {mode!r}")
        if law not in get_args(NoiseLaw):
            raise ConfigError(f"{self.name}: law must be one of {get_args(NoiseLaw)}, got {law!r}")
        self.bound, self.mode, self.law = float(bound), mode, law

    def apply(self, split: SplitModel) -> SplitModel:
        if self.strength == 0:
            return split  # strength 0 is the identity, bound included (the undefended split)
        return wrap_edge(
            split, BoundedNoise(bound=self.bound, relative_std=self.strength, mode=self.mode, law=self.law)
        )
