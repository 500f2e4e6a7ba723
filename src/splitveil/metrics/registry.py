"""The metric registry: image metrics by name, each declaring which direction is better.

A spec or report names a metric as a string and needs to know how to read it (is a bigger SSIM a
better reconstruction? a bigger MSE?). ``METRICS.create(name)`` returns a :class:`MetricInfo`,
which is also callable as the metric itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from splitveil.metrics.image import mse, psnr, ssim
from splitveil.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    """A reconstruction metric ``fn(x_hat, x, **options) -> Tensor`` and how to read it.

    ``higher_is_better`` is from the reconstruction's (the attacker's) point of view: a higher SSIM
    is a better reconstruction, hence *less* privacy.

    Example:
        >>> info = METRICS.create("psnr")
        >>> info.higher_is_better, info.unit
        (True, 'dB')
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> round(float(info(x + 0.1, x)), 3)
        20.0
    """

    name: str
    fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    description: str
    unit: str = ""

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor, **options: object) -> torch.Tensor:
        return self.fn(x_hat, x, **options)


METRICS: Registry[MetricInfo] = Registry("metric")


def _register(info: MetricInfo) -> None:
    # Registry entries are factories; a metric's description is fixed, so its factory returns it.
    METRICS.register(info.name)(lambda: info)


_register(MetricInfo("mse", mse, higher_is_better=False, description="mean squared pixel error per image"))
_register(
    MetricInfo("psnr", psnr, higher_is_better=True, description="peak signal-to-noise ratio per image", unit="dB")
)
_register(MetricInfo("ssim", ssim, higher_is_better=True, description="structural similarity (Gaussian 11x11 window)"))
