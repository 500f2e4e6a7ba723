"""CIFAR-style residual networks (He et al., 2016): ``resnet8`` and ``resnet20``.

A DAG, not a chain: inside a block the skip connection is a second live tensor, so only block
boundaries (and the stem and pooling) are valid cuts. Downsampling shortcuts are 1x1 convolutions.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from splitveil.models.layers import conv3x3
from splitveil.models.registry import MODELS


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ``out_relu`` is the block's (cuttable) output."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(out_channels, out_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.out_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.out_relu(residual + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks_per_stage`` blocks (widths 16/32/64), global pool, linear."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        blocks_per_stage: int = 1,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(
            OrderedDict(conv=conv3x3(channels, widths[0], bias=False), bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU())
        )
        aliases = {"stem": "stem.relu"}
        in_channels = widths[0]
        stages = []
        for stage, out_channels in enumerate(widths, start=1):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride=stride))
                aliases[f"layer{stage}.{index}"] = f"layer{stage}.{index}.out_relu"
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)
        aliases["pool"] = "pool"
        self.cut_points = aliases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


# The depth is the model's name, so it is no option: these signatures list what a spec may set.
@MODELS.register("resnet8", input_shape=(3, 32, 32), cut_points=("stem", "layer1.0", "layer2.0", "layer3.0", "pool"))
def resnet8(
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    widths: tuple[int, int, int] = (16, 32, 64),
) -> CifarResNet:
    """ResNet-8: one basic block per stage."""
    return CifarResNet(input_shape=input_shape, num_classes=num_classes, blocks_per_stage=1, widths=widths)


@MODELS.register(
    "resnet20",
    input_shape=(3, 32, 32),
    cut_points=("stem", *(f"layer{stage}.{block}" for stage in (1, 2, 3) for block in range(3)), "pool"),
)
def resnet20(
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    widths: tuple[int, int, int] = (16, 32, 64),
) -> CifarResNet:
    """ResNet-20: three basic blocks per stage."""
    return CifarResNet(input_shape=input_shape, num_classes=num_classes, blocks_per_stage=3, widths=widths)
