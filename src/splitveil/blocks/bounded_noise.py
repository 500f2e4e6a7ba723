"""A bounded bottleneck with calibrated noise: the feature's scale is fixed per sample, then noised.

Plain feature noise of σ hides less as training goes on, because the model is free to scale its
feature up: at σ = 2 the inverse network still reaches SSIM 0.82 at relu22 (docs/BENCHMARKS.md).
Here each sample's feature is first brought to a root-mean-square of exactly ``bound``
(``mode="normalize"``) or at most ``bound`` (``mode="clip"``), a scale no weight can inflate, and
only then noised with a standard deviation of ``relative_std · bound`` per value. The signal-to-noise
ratio is therefore what the configuration says, whatever the model learns.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from splitveil.blocks.noise_source import SILENT, NoiseSource, randn_like, uniform_like

BoundMode = Literal["normalize", "clip"]
NoiseLaw = Literal["gaussian", "laplace"]
_EPS = 1e-12  # a feature of all zeros stays zero instead of dividing by zero


class BoundedNoise(nn.Module):
    """``bound(z) + ε`` with ``std(ε) = relative_std · bound`` per value, in train and eval mode alike.

    Example:
        >>> block = BoundedNoise(bound=2.0, relative_std=0.0)
        >>> z = torch.randn(3, 4, 5, 5) * 100
        >>> torch.allclose(block(z).pow(2).flatten(1).mean(1).sqrt(), torch.full((3,), 2.0))
        True
    """

    def __init__(
        self, *, bound: float, relative_std: float, mode: BoundMode = "normalize", law: NoiseLaw = "gaussian"
    ) -> None:
        super().__init__()
        if not (bound > 0 and math.isfinite(bound)) or not (relative_std >= 0 and math.isfinite(relative_std)):
            raise ValueError(
                f"BoundedNoise: need a finite bound > 0 and relative_std >= 0, got {bound}, {relative_std}"
            )
        if mode not in ("normalize", "clip") or law not in ("gaussian", "laplace"):
            raise ValueError(f"BoundedNoise: mode is normalize or clip and law gaussian or laplace, got {mode}, {law}")
        self.bound, self.relative_std, self.mode, self.law = float(bound), float(relative_std), mode, law
        self.noise_source: NoiseSource = None  # torch's global generator (see splitveil.blocks.noise_source)

    def bounded(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with each sample's root-mean-square brought to ``bound`` (normalize) or below it (clip)."""
        rms = z.pow(2).flatten(1).mean(dim=1).sqrt().view(-1, *([1] * (z.ndim - 1)))
        scale = self.bound / (rms + _EPS)
        return z * (scale if self.mode == "normalize" else scale.clamp(max=1.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        signal = self.bounded(z)
        if self.relative_std == 0 or self.noise_source == SILENT:
            return signal
        std = self.relative_std * self.bound
        if self.law == "gaussian":
            return signal + std * randn_like(signal, self.noise_source)
        # Laplace(0, b) has std √2·b; sampled by inversion as LaplaceNoise does.
        u = uniform_like(signal, self.noise_source, torch.finfo(signal.dtype).eps - 1, 1)
        return signal - (std / math.sqrt(2)) * u.sign() * torch.log1p(-u.abs())

    def extra_repr(self) -> str:
        return f"bound={self.bound:g}, relative_std={self.relative_std:g}, mode={self.mode}, law={self.law}"
