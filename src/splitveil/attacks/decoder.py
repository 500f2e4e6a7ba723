"""The inverse network's decoder ``g(z) ≈ x``, its architecture derived from the two shapes.

For a spatial feature ``[C, h, w]`` and an input ``[C0, H, W]``::

    scale:  per-channel standardisation of z with statistics of the attacker's own queries
            (optional, fixed buffers): a defense that shrinks or inflates its features, or gives
            channels wildly different scales, then looks the same to the first convolution
    stem:   3x3 conv C -> width, BatchNorm, ReLU
    res_k:  ``blocks`` residual blocks (conv-BN-ReLU-conv-BN plus the identity) at the feature's
            own resolution, where they are cheapest and where a defense's scrambling has to be
            undone (the upsampling stages then only paint the pixels)
    up_k:   ConvTranspose2d(kernel 4, stride 2, padding 1) - exactly doubles h and w - BN, ReLU,
            repeated until h >= H and w >= W (none for a shallow cut); channels halve at every
            step, never below 16, since the finer maps need fewer features and cost the most
    resize: bilinear interpolation to exactly H x W (identity when the sizes already match), placed
            *before* the head so that the last convolution can smooth interpolation artefacts
            (odd sizes such as 25x25, or floor-pooled maps such as 28 -> 3 -> 24 -> 28)
    head:   3x3 conv -> C0, sigmoid (pixels in [0, 1])

With ``blocks=0`` this is three layers at a middle cut (stem, one upsampling, head): too shallow to
undo what a defense trained against a decoder of its own has scrambled. The residual blocks give the
decoder the depth to do so; their skip connections keep it as easy to train as the shallow one.

A flat feature ``[d]`` (after a fully connected layer; any shape that is not ``[C, h, w]`` is
flattened) first goes through ``Linear(d, width · ⌈H/4⌉ · ⌈W/4⌉)`` + ReLU and is reshaped to a
``[width, ⌈H/4⌉, ⌈W/4⌉]`` map, which then takes the spatial path above (two upsamplings). A pure
MLP to ``C0·H·W`` pixels would need ``d·C0·H·W`` weights and no spatial prior; the small map keeps
the decoder convolutional where images are.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Fewest channels an upsampling stage is narrowed to.
MIN_UPSAMPLING_WIDTH = 16


class Standardize(nn.Module):
    """``(z - mean) / std`` per channel (dimension 1), with statistics fixed at construction."""

    # Buffers, registered in __init__.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    @classmethod
    def fitted(cls, features: torch.Tensor, *, floor: float = 1e-6) -> Standardize:
        """Statistics of ``features`` ``[N, C, ...]`` per channel, over the batch and every position;
        a channel that never varies gets ``std = 1`` (it carries nothing to rescale)."""
        dims = [0, *range(2, features.ndim)]
        mean = features.mean(dim=dims, keepdim=True)[0]
        std = features.std(dim=dims, keepdim=True)[0]
        return cls(mean, torch.where(std > floor, std, torch.ones_like(std)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` with 3x3 convolutions that keep the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResizeTo(nn.Module):
    """Bilinear resize of NCHW maps to a fixed ``(height, width)``; identity if already that size."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class FeatureWithAnswer(nn.Module):
    """Unpack a joint input ``[N, F + K]`` (a flattened ``[C, h, w]`` feature, then the cloud's ``K``
    outputs) into ``[N, C + channels, h, w]``: the feature map, and beside it a learned
    ``[channels, h, w]`` map of the answer (a linear projection, so that the answer can place
    class-specific structure anywhere in the image, which a constant per-channel broadcast could not).
    """

    def __init__(self, feature_shape: Sequence[int], answer_size: int, channels: int) -> None:
        super().__init__()
        self.feature_shape = tuple(int(s) for s in feature_shape)
        _, h, w = self.feature_shape
        self.answer_shape = (channels, h, w)
        self.project = nn.Sequential(nn.Linear(answer_size, channels * h * w), nn.ReLU())

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        size = math.prod(self.feature_shape)
        feature = joint[:, :size].reshape(-1, *self.feature_shape)
        answer = self.project(joint[:, size:]).reshape(-1, *self.answer_shape)
        return torch.cat([feature, answer], dim=1)


def build_joint_decoder(
    feature_shape: Sequence[int],
    answer_size: int,
    input_shape: Sequence[int],
    *,
    width: int = 64,
    blocks: int = 0,
    scale: Standardize | None = None,
) -> nn.Sequential:
    """A decoder from ``[N, F + K]`` joint inputs (a flattened feature of ``feature_shape`` followed by
    ``answer_size`` cloud outputs) to images. A spatial feature is decoded with the answer's learned
    map as ``width`` extra channels (:class:`FeatureWithAnswer`), so the decoder holds both the
    inverse network's path and the output oracle's; a flat one as one flat vector.
    ``scale`` standardises the joint vector element-wise first.

    Example:
        >>> import torch
        >>> g = build_joint_decoder((8, 7, 7), 10, (1, 28, 28), width=16)
        >>> tuple(g(torch.zeros(2, 8 * 7 * 7 + 10)).shape)
        (2, 1, 28, 28)
    """
    feature_shape = tuple(int(s) for s in feature_shape)
    if len(feature_shape) != 3:
        joint = (math.prod(feature_shape) + answer_size,)
        return build_decoder(joint, input_shape, width=width, blocks=blocks, scale=scale)
    input_shape = _checked_arguments(input_shape, width=width, blocks=blocks)
    channels, h, w = feature_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict() if scale is None else OrderedDict(scale=scale)
    layers["unpack"] = FeatureWithAnswer(feature_shape, answer_size, width)
    spatial = _spatial_decoder((channels + width, h, w), input_shape, width=width, blocks=blocks)
    return nn.Sequential(layers | spatial)


def build_decoder(
    feature_shape: Sequence[int],
    input_shape: Sequence[int],
    *,
    width: int = 64,
    blocks: int = 0,
    scale: Standardize | None = None,
) -> nn.Sequential:
    """A decoder mapping ``[N, *feature_shape]`` features to ``[N, *input_shape]`` images in [0, 1].

    ``width`` is the channel count of the first stage (and of the flat path's small map);
    ``blocks`` the residual blocks per resolution; ``scale`` an optional first standardisation.

    Example:
        >>> import torch
        >>> g = build_decoder((64, 3, 3), (1, 28, 28), width=16)
        >>> tuple(g(torch.zeros(2, 64, 3, 3)).shape)
        (2, 1, 28, 28)
    """
    input_shape = _checked_arguments(input_shape, width=width, blocks=blocks)
    feature_shape = tuple(int(s) for s in feature_shape)
    first: OrderedDict[str, nn.Module] = OrderedDict() if scale is None else OrderedDict(scale=scale)
    if len(feature_shape) == 3:
        return nn.Sequential(first | _spatial_decoder(feature_shape, input_shape, width=width, blocks=blocks))
    return _flat_decoder(math.prod(feature_shape), input_shape, width=width, blocks=blocks, first=first)


def _checked_arguments(input_shape: Sequence[int], *, width: int, blocks: int) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints, after refusing a width, block count or shape no decoder can have."""
    if width < 1:
        raise ValueError(f"decoder width must be >= 1, got {width}")
    if blocks < 0:
        raise ValueError(f"decoder blocks must be >= 0, got {blocks}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {shape}")
    return shape


def _spatial_decoder(
    feature_shape: tuple[int, ...], input_shape: tuple[int, ...], *, width: int, blocks: int
) -> OrderedDict[str, nn.Module]:
    channels, h, w = feature_shape
    out_channels, height, out_width = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Conv2d(channels, width, 3, padding=1)
    layers["stem_bn"] = nn.BatchNorm2d(width)
    layers["stem_relu"] = nn.ReLU()
    current, stage = width, 0
    for block in range(blocks):
        layers[f"res0_{block}"] = ResidualBlock(current)
    while h < height or w < out_width:
        stage += 1
        narrower = max(current // 2, min(current, MIN_UPSAMPLING_WIDTH))
        layers[f"up{stage}"] = nn.ConvTranspose2d(current, narrower, 4, stride=2, padding=1)
        layers[f"up{stage}_bn"] = nn.BatchNorm2d(narrower)
        layers[f"up{stage}_relu"] = nn.ReLU()
        current, h, w = narrower, h * 2, w * 2
    layers["resize"] = ResizeTo((height, out_width))
    layers["head"] = nn.Conv2d(current, out_channels, 3, padding=1)
    layers["sigmoid"] = nn.Sigmoid()
    return layers


def _flat_decoder(
    features: int, input_shape: tuple[int, ...], *, width: int, blocks: int, first: OrderedDict[str, nn.Module]
) -> nn.Sequential:
    _, height, out_width = input_shape
    map_h, map_w = max(1, math.ceil(height / 4)), max(1, math.ceil(out_width / 4))
    layers: OrderedDict[str, nn.Module] = OrderedDict(first)
    layers["flatten"] = nn.Flatten()
    layers["project"] = nn.Linear(features, width * map_h * map_w)
    layers["project_relu"] = nn.ReLU()
    layers["unflatten"] = nn.Unflatten(1, (width, map_h, map_w))
    layers.update(_spatial_decoder((width, map_h, map_w), input_shape, width=width, blocks=blocks))
    return nn.Sequential(layers)
