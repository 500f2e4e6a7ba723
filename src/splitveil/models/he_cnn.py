"""The 6-conv + 2-FC CNN attacked by He, Zhang and Lee (ACSAC 2019), sized to the input.

Layer names follow their paper (``conv11``, ``relu22``, ``relu32``...), so every layer is a cut.
Widths are configurable; the defaults (16, 32, 64) are narrower than a CIFAR-scale network so the
model trains in about half a minute an epoch on a 2-core CPU and still exceeds 91% on Fashion-MNIST.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from splitveil.models.layers import conv_stages, pooled_size
from splitveil.models.registry import MODELS


class HeCNN(nn.Sequential):
    """conv11 relu11 conv12 relu12 pool1 | conv21 ... pool2 | conv31 ... pool3 | fc1 relu4 fc2."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
        hidden: int = 256,
    ) -> None:
        channels, height, width = input_shape
        layers = conv_stages(channels, widths, batch_norm=False)
        flat = widths[-1] * pooled_size(height, 3) * pooled_size(width, 3)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(flat, hidden)
        layers["relu4"] = nn.ReLU()
        layers["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(layers)
        self.cut_points = tuple(name for name in layers if name not in ("flatten", "fc2"))


@MODELS.register(
    "he-cnn",
    input_shape=(1, 28, 28),
    cut_points=tuple(
        "conv11 relu11 conv12 relu12 pool1 conv21 relu21 conv22 relu22 pool2 conv31 relu31 conv32 relu32 pool3 fc1 relu4".split()
    ),
)
def he_cnn(**options: Any) -> HeCNN:
    """He et al.'s 6-conv + 2-FC CNN."""
    return HeCNN(**options)
