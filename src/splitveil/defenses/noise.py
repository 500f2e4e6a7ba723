"""Additive noise on the transmitted feature or on the input — He, Zhang and Lee (IoTJ 2020).

The baseline defenses of He et al.: the edge sends ``z + ε`` (``where="feature"``) or computes
``z = f_edge(x + ε)`` (``where="input"``), with ε i.i.d.

* ``"gaussian-noise"``: ε ~ N(0, σ²), strength = σ (the standard deviation);
* ``"laplace-noise"``: ε ~ Laplace(0, b), density ``exp(−|ε|/b) / 2b``, strength = b (the scale;
  ``E|ε| = b``, std ``√2·b``).

On MNIST they found that keeping accuracy above 95% limits σ < 0.8 and b < 0.5, where an attacker
still reconstructs with SSIM > 0.4 [paper].

Design decisions [ours]:

* The noise is active **in train and eval mode alike**: it is part of the deployed edge and is
  sampled on every inference, not a train-only regulariser like dropout. A fresh draw is made on
  every call.
* Input noise is **not clamped** to [0, 1]: clamping would bias the noise (a pixel at 0 could only
  move up) and make its distribution depend on the image; the edge simply receives values outside
  the image range, which is what a device adding noise to its sensor reading would compute.
* Samples come from torch's **global** generator by default, so that they are reproducible wherever
  randomness is seeded: :func:`splitveil.train.fit` seeds it inside ``splitveil.seeding.seeded``, and
  attacks querying the deployed edge seed their own ``seeded`` block. A device draws from a secure
  source instead (``noise_source = "secure"``, set by the edge client; see
  :mod:`splitveil.blocks.noise_source`).
* Strength 0 returns the input tensor itself and draws nothing, so it is exactly the identity and
  leaves the global random stream untouched.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from splitveil.blocks.noise_source import SILENT, NoiseSource, randn_like, uniform_like
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.options import NonNegative
from splitveil.split import SplitModel

Where = Literal["feature", "input"]


class GaussianNoise(nn.Module):
    """``x + σ·ε``, ε ~ N(0, I) from ``noise_source`` (torch's global generator by default), in train
    and eval mode alike."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"GaussianNoise: sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.noise_source: NoiseSource = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0 or self.noise_source == SILENT:
            return x
        return x + self.sigma * randn_like(x, self.noise_source)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


class LaplaceNoise(nn.Module):
    """``x + ε``, ε ~ Laplace(0, b) i.i.d. from ``noise_source``, in train and eval mode alike.

    Sampled by inversion, as ``torch.distributions.Laplace`` does: for u ~ U(−1, 1),
    ``ε = −b · sign(u) · log(1 − |u|)``. The lower bound of u is nudged up by the dtype's epsilon
    so that ``log(0)`` cannot occur.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        if not scale >= 0:
            raise ValueError(f"LaplaceNoise: scale must be >= 0, got {scale}")
        self.scale = float(scale)
        self.noise_source: NoiseSource = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 0 or self.noise_source == SILENT:
            return x
        u = uniform_like(x, self.noise_source, torch.finfo(x.dtype).eps - 1, 1)
        return x - self.scale * u.sign() * torch.log1p(-u.abs())

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class _NoiseDefense(Defense):
    """Wraps the edge with a noise module, on its output (``feature``) or its input (``input``)."""

    noise_kind: ClassVar[type[nn.Module]]

    def __init__(self, *, strength: NonNegative = 1.0, where: Where = "feature") -> None:
        super().__init__(strength=strength)
        self.where: Where = where

    def noise(self) -> nn.Module:
        return self.noise_kind(self.strength)

    def apply(self, split: SplitModel) -> SplitModel:
        if self.where == "input":
            return wrap_edge(split, before_edge=self.noise())
        return wrap_edge(split, self.noise())


@register_defense
class GaussianNoiseDefense(_NoiseDefense):
    """Gaussian noise N(0, σ²) on ``z`` or on ``x``; strength = σ."""

    name = "gaussian-noise"
    noise_kind = GaussianNoise


@register_defense
class LaplaceNoiseDefense(_NoiseDefense):
    """Laplace noise of scale b on ``z`` or on ``x``; strength = b."""

    name = "laplace-noise"
    noise_kind = LaplaceNoise
