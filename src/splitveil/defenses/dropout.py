"""Dropout on the transmitted feature — He, Zhang and Lee (IoTJ 2020).

The edge sends ``z ⊙ M`` with M ~ Bernoulli(1 − p) i.i.d. per element; strength = p ∈ [0, 1), the
probability that an element is zeroed. He et al. found it a better privacy/accuracy trade-off than
additive noise on MNIST [paper].

Design decisions [ours]:

* Active **in eval mode too**: this is a deployed defense, sampled on every inference, not
  ``nn.Dropout`` (which is the identity in eval mode).
* No rescaling by default, as in the paper (``z ⊙ M``); ``rescale=True`` gives inverted dropout,
  ``z ⊙ M / (1 − p)``, which keeps ``E[z]`` so a cloud trained without the defense sees features
  of the scale it expects.
* The mask is drawn from torch's global generator (see :mod:`splitveil.defenses.noise` for why);
  p = 0 returns ``z`` itself and draws nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from splitveil.blocks.noise_source import SILENT, NoiseSource, uniform_like
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.options import Fraction
from splitveil.split import SplitModel


class FeatureDropout(nn.Module):
    """``z ⊙ M`` (``/ (1 − p)`` if ``rescale``), M ~ Bernoulli(1 − p), in train and eval mode alike."""

    def __init__(self, p: float, *, rescale: bool = False) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"FeatureDropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rescale = rescale
        self.noise_source: NoiseSource = None  # torch's global generator (see splitveil.blocks.noise_source)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.p == 0 or self.noise_source == SILENT:
            return z
        keep = uniform_like(z, self.noise_source) >= self.p  # P(u >= p) = 1 - p for u ~ U[0, 1)
        kept = z * keep
        return kept / (1 - self.p) if self.rescale else kept

    def extra_repr(self) -> str:
        return f"p={self.p:g}, rescale={self.rescale}"


@register_defense
class FeatureDropoutDefense(Defense):
    """Bernoulli dropout on ``z`` at deployment; strength = p, the drop probability, in [0, 1)."""

    name = "feature-dropout"

    def __init__(self, *, strength: Fraction = 0.5, rescale: bool = False) -> None:
        super().__init__(strength=strength)
        self.rescale = rescale

    def apply(self, split: SplitModel) -> SplitModel:
        return wrap_edge(split, FeatureDropout(self.strength, rescale=self.rescale))
