"""``bounded-noise``: calibrated noise on a bounded bottleneck, the fair noise baseline (issue 20).

The edge's feature is brought to a fixed per-sample scale (:class:`~splitveil.blocks.bounded_noise.
BoundedNoise`), then noised with a standard deviation of ``strength × bound`` per value: strength is
the noise's standard deviation relative to the signal's root-mean-square, which training cannot
change. The model trains with the noise in place (noise-aware), from the undefended weights or from
scratch as the spec says.
"""

from __future__ import annotations

from splitveil.blocks.bounded_noise import BoundedNoise, BoundMode, NoiseLaw
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.options import NonNegative, Positive
from splitveil.split import SplitModel


@register_defense
class BoundedNoiseDefense(Defense):
    """Per-sample bounded feature plus noise of ``strength × bound`` standard deviation; strength = relative std."""

    name = "bounded-noise"
    requires_training = True  # the cloud half must learn to read the bounded, noised feature

    def __init__(
        self,
        *,
        strength: NonNegative = 0.5,
        bound: Positive = 1.0,
        mode: BoundMode = "normalize",
        law: NoiseLaw = "gaussian",
    ) -> None:
        super().__init__(strength=strength)
        self.bound, self.mode, self.law = float(bound), mode, law

    def apply(self, split: SplitModel) -> SplitModel:
        if self.strength == 0:
            return split  # strength 0 is the identity, bound included (the undefended split)
        return wrap_edge(
            split, BoundedNoise(bound=self.bound, relative_std=self.strength, mode=self.mode, law=self.law)
        )
