"""Small helpers shared by the zoo's architectures."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def conv3x3(in_channels: int, out_channels: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with 'same' padding (for stride 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def pooled_size(size: int, times: int) -> int:
    """Spatial size after ``times`` 2x2 max-pools with floor rounding."""
    for _ in range(times):
        size //= 2
    if size < 1:
        raise ValueError(f"input too small: {times} 2x2 poolings reduce it below one pixel")
    return size


def conv_stages(
    in_channels: int, widths: tuple[int, ...], *, batch_norm: bool, separator: str = ""
) -> OrderedDict[str, nn.Module]:
    """VGG-style stages: two 3x3 conv (+BN) + ReLU layers each, then a 2x2 max-pool.

    Layers are named ``conv{stage}{separator}{index}`` (``conv11`` or ``conv1_1``), ``bn…``,
    ``relu…`` and ``pool{stage}``, so every layer is addressable as a cut.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for stage, out_channels in enumerate(widths, start=1):
        for index in (1, 2):
            suffix = f"{stage}{separator}{index}"
            layers[f"conv{suffix}"] = conv3x3(in_channels, out_channels, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{suffix}"] = nn.BatchNorm2d(out_channels)
            layers[f"relu{suffix}"] = nn.ReLU()
            in_channels = out_channels
        layers[f"pool{stage}"] = nn.MaxPool2d(2)
    return layers
