"""A small VGG: three stages of two 3x3 conv + batch-norm + ReLU, then two fully connected layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from splitveil.models.layers import conv_stages, pooled_size
from splitveil.models.registry import MODELS


class SmallVGG(nn.Sequential):
    """Stages named ``conv{s}_{i}`` / ``bn{s}_{i}`` / ``relu{s}_{i}`` and ``pool{s}``."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        widths: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.3,
    ) -> None:
        channels, height, width = input_shape
        layers = conv_stages(channels, widths, batch_norm=True, separator="_")
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(widths[-1] * pooled_size(height, 3) * pooled_size(width, 3), hidden)
        layers["relu_fc1"] = nn.ReLU()
        layers["dropout"] = nn.Dropout(dropout)
        layers["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(layers)
        self.cut_points = tuple(name for name in layers if name.startswith(("relu", "pool")) or name == "fc1")


@MODELS.register(
    "vgg-small",
    input_shape=(3, 32, 32),
    cut_points=tuple("relu1_1 relu1_2 pool1 relu2_1 relu2_2 pool2 relu3_1 relu3_2 pool3 fc1 relu_fc1".split()),
)
def vgg_small(**options: Any) -> SmallVGG:
    """A six-conv VGG with batch norm."""
    return SmallVGG(**options)
