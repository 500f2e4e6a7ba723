"""LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, padded so 28x28 inputs keep the classic sizes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from splitveil.models.registry import MODELS


class LeNet(nn.Sequential):
    """conv1 relu1 pool1 conv2 relu2 pool2 fc1 relu3 fc2 relu4 fc3."""

    def __init__(self, *, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        channels, height, width = input_shape
        # Padding 2 makes a 28x28 input behave like LeNet's original 32x32 one.
        flat_h = ((height + 4 - 4) // 2 - 4) // 2
        flat_w = ((width + 4 - 4) // 2 - 4) // 2
        if min(flat_h, flat_w) < 1:
            raise ValueError(f"input {input_shape} is too small for LeNet (needs at least 12x12)")
        layers = OrderedDict(
            conv1=nn.Conv2d(channels, 6, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * flat_h * flat_w, 120),
            relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84),
            relu4=nn.ReLU(),
            fc3=nn.Linear(84, num_classes),
        )
        super().__init__(layers)
        self.cut_points = tuple(name for name in layers if name not in ("flatten", "fc3"))


@MODELS.register(
    "lenet",
    input_shape=(1, 28, 28),
    cut_points=tuple("conv1 relu1 pool1 conv2 relu2 pool2 fc1 relu3 fc2 relu4".split()),
)
def lenet(**options: Any) -> LeNet:
    """LeNet-5."""
    return LeNet(**options)
