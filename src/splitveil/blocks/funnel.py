"""SiftFunnel's modules: the funnel at the cut, the cloud's up-projection, and where to attach them.

* :class:`FunnelBlock` — squeeze-excitation (which channels matter), CBAM-style spatial attention
  (which positions matter), then a convolution that narrows the channels sharply (e.g. 64 → 4).
* :class:`UpProjection` — two 3x3 convolutions that widen the funnel's output back to the channel
  count the cloud was built for, so the rest of the cloud is unchanged.
* :func:`edge_output` — reads the edge's graph to find how many channels it sends and which layer
  sets that count, so the modules can be built before any input shape is known.
* :func:`attach_funnel` — the funnel split: appended after the edge, or in place of its last conv.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from splitveil.errors import ConfigError
from splitveil.split import SplitModel, trace
from splitveil.surgery import CHANNEL_AGNOSTIC, conv_padding, conv_pair, replace_module


class SqueezeExcitation(nn.Module):
    """``x · sigmoid(W₂ relu(W₁ avgpool(x)))``: one learnt weight per channel (Hu et al., 2018).

    ``W₁``/``W₂`` are 1x1 convolutions on the pooled ``[N, C, 1, 1]`` vector, through
    ``max(1, C // reduction)`` hidden channels.
    """

    def __init__(self, channels: int, *, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.excite(F.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(weights)


class SpatialAttention(nn.Module):
    """``x · sigmoid(conv([mean_c x; max_c x]))``: one learnt weight per position (CBAM, Woo et al., 2018)."""

    def __init__(self, *, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(descriptor))


class FunnelBlock(nn.Module):
    """Squeeze-excitation, spatial attention, then a ``kernel_size`` conv from ``in_channels`` to ``out_channels``.

    The attention decides what the narrow conv gets to keep. ``padding`` defaults to
    ``kernel_size // 2`` ("same" size at stride 1). FLOPs per sample on an ``H×W`` input with
    ``h = max(1, in_channels // reduction)`` (torch's flop counter: 2 per multiply-accumulate,
    biases, pooling and elementwise ops free):
    ``4·in·h + 4·k_s²·H·W + 2·in·out·k²·H'·W'`` (SE, spatial attention, the conv on its output ``H'×W'``).

    Example:
        >>> block = FunnelBlock(64, 4, reduction=4)
        >>> tuple(block(torch.zeros(2, 64, 8, 8)).shape)
        (2, 4, 8, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        reduction: int = 4,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str | None = None,
        bias: bool = True,
        spatial_kernel: int = 7,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or reduction < 1:
            raise ValueError(
                f"FunnelBlock: channels and reduction must be >= 1, got {in_channels}, {out_channels}, {reduction}"
            )
        self.channel_attention = SqueezeExcitation(in_channels, reduction=reduction)
        self.spatial_attention = SpatialAttention(kernel_size=spatial_kernel)
        if padding is None:
            padding = kernel_size // 2 if isinstance(kernel_size, int) else (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if self.conv.bias is not None:
            # When an activation follows (in place of an edge conv), random negative biases on the
            # small attended inputs could leave a narrow output dead from the first step.
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.spatial_attention(self.channel_attention(x)))


class UpProjection(nn.Module):
    """Cloud side of the funnel: ``conv3x3(in → hidden) → ReLU → conv3x3(hidden → out)``, size kept.

    The last conv is linear: the cloud that follows receives whatever the original edge sent,
    which is not always a post-ReLU feature.

    Example:
        >>> up = UpProjection(4, 64)
        >>> tuple(up(torch.zeros(2, 4, 8, 8)).shape)
        (2, 64, 8, 8)
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int | None = None) -> None:
        super().__init__()
        hidden = out_channels if hidden is None else hidden
        if min(in_channels, out_channels, hidden) < 1:
            raise ValueError(f"UpProjection: channels must be >= 1, got {in_channels}, {hidden}, {out_channels}")
        self.widen = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.relu = nn.ReLU()
        self.project = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.widen.in_channels:
            raise ValueError(f"UpProjection expects [N, {self.widen.in_channels}, H, W] features, got {tuple(z.shape)}")
        return self.project(self.relu(self.widen(z)))


# Layers that keep the channel count and the channel order of their (first) input: walking back
# from the edge's output through them reaches the layer that sets the count. BatchNorm2d keeps the
# count but has per-channel parameters, which replacing the last conv must rebuild.
_CHANNEL_PRESERVING_MODULES: tuple[type[nn.Module], ...] = (*CHANNEL_AGNOSTIC, nn.BatchNorm2d)
_CHANNEL_PRESERVING_FUNCTIONS = frozenset(
    {
        operator.add,
        operator.mul,
        torch.add,
        torch.mul,
        torch.relu,
        torch.sigmoid,
        torch.tanh,
        F.relu,
        F.max_pool2d,
        F.avg_pool2d,
    }
)
_CHANNEL_PRESERVING_METHODS = frozenset({"relu", "sigmoid", "tanh", "add", "mul", "contiguous"})


@dataclass(frozen=True)
class EdgeOutput:
    """What the edge sends: ``channels`` (dim 1) set by the layer ``source``; ``spatial`` for NCHW.

    ``tail`` lists the graph nodes between ``source`` and the output (nearest the output first).
    """

    channels: int
    spatial: bool
    source: fx.Node
    tail: tuple[fx.Node, ...]


def edge_output(edge: fx.GraphModule) -> EdgeOutput:
    """Walk back from ``edge``'s output through channel-preserving layers to the Conv2d or Linear that sets its width.

    Raises:
        ConfigError: the walk meets a layer that may change the channel count (flatten, concat...).
    """
    output = next(node for node in edge.graph.nodes if node.op == "output")
    node = output.args[0]
    tail: list[fx.Node] = []
    while True:
        if not isinstance(node, fx.Node) or node.op not in ("call_module", "call_function", "call_method"):
            raise ConfigError("cannot find the layer that sets the edge's output channels; cut after a Conv2d")
        module = edge.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            return EdgeOutput(module.out_channels, spatial=True, source=node, tail=tuple(tail))
        if isinstance(module, nn.Linear):
            return EdgeOutput(module.out_features, spatial=False, source=node, tail=tuple(tail))
        if not _preserves_channels(node, module):
            raise ConfigError(
                f"cannot tell the edge's output channels through {_describe(node, module)}; cut before it, "
                "or right after a Conv2d (possibly followed by BatchNorm, activation or pooling)"
            )
        tail.append(node)
        node = next(arg for arg in node.args if isinstance(arg, fx.Node))


def attach_funnel(
    split: SplitModel,
    *,
    channels: int,
    reduction: int,
    kernel_size: int,
    replace_last_conv: bool,
    label: str = "siftfunnel",
) -> SplitModel:
    """The funnel split: edge ``→ FunnelBlock`` and cloud ``UpProjection →``; ``split`` itself is unchanged.

    Appended (``replace_last_conv=False``): edge = ``split.edge → FunnelBlock(C → channels)``, sharing
    ``split.edge``; no activation follows, since with a few channels a ReLU can leave the whole
    funnel dead from initialisation (no gradient would then reach the edge). Replacing: a copy of the edge whose last Conv2d (the one that sets the
    output's width) becomes a FunnelBlock with that conv's input channels, kernel, stride and padding
    and ``channels`` outputs; BatchNorms between it and the cut are rebuilt for the new width. Either
    way the cloud is ``UpProjection(channels → C) → split.cloud`` with ``C`` the original width.
    New modules take the weights torch's global generator gives them: seed it around this call.
    """
    edge_graph = trace(split.edge)
    found = edge_output(edge_graph)
    if not found.spatial:
        raise ConfigError(
            f"{label}: the funnel needs an NCHW feature, but cut {split.cut_name!r} sends a flat vector "
            "(from a Linear); cut at a convolutional layer, or set funnel_channels=None"
        )
    # New modules start in train mode; each takes the mode of what it joins or replaces, and the
    # containers' flags are set without recursing, so the shared halves keep exactly their modes.
    edge: nn.Module
    if replace_last_conv:
        edge = _edge_with_funnel_conv(edge_graph, found, channels=channels, reduction=reduction, label=label)
    else:
        funnel = FunnelBlock(found.channels, channels, reduction=reduction, kernel_size=kernel_size)
        edge = nn.Sequential(OrderedDict(edge=split.edge, funnel=funnel.train(split.edge.training)))
        edge.training = split.edge.training
    up = UpProjection(channels, found.channels).train(split.cloud.training)
    cloud = nn.Sequential(OrderedDict(up=up, cloud=split.cloud))
    defended = SplitModel(edge, cloud, cut_name=split.cut_name)
    cloud.training, defended.training = split.cloud.training, split.training
    return defended


def _edge_with_funnel_conv(
    edge_graph: fx.GraphModule, found: EdgeOutput, *, channels: int, reduction: int, label: str
) -> fx.GraphModule:
    """A copy of the edge whose last conv is a FunnelBlock of ``channels`` outputs, with its tail refitted."""
    _check_replaceable(edge_graph, found, label=label)
    edge = copy.deepcopy(edge_graph)
    conv = cast(nn.Conv2d, edge.get_submodule(str(found.source.target)))  # checked by _check_replaceable
    funnel = FunnelBlock(
        conv.in_channels,
        channels,
        reduction=reduction,
        kernel_size=conv_pair(conv.kernel_size),
        stride=conv_pair(conv.stride),
        padding=conv_padding(conv.padding),
        bias=conv.bias is not None,
    ).train(conv.training)
    replace_module(edge, str(found.source.target), funnel)
    for node in found.tail:
        if node.op == "call_module" and isinstance(norm := edge.get_submodule(str(node.target)), nn.BatchNorm2d):
            rebuilt = nn.BatchNorm2d(
                channels,
                eps=norm.eps,
                momentum=norm.momentum,
                affine=norm.affine,
                track_running_stats=norm.track_running_stats,
            ).train(norm.training)
            replace_module(edge, str(node.target), rebuilt)
    return edge


def _check_replaceable(edge: fx.GraphModule, found: EdgeOutput, *, label: str) -> None:
    """The conv's output must reach the cut alone, through single-input layers, for its width to change."""
    conv = edge.get_submodule(str(found.source.target))
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError(
            f"{label}: replace_last_conv needs a Conv2d to set the cut's channels, found "
            f"{type(conv).__name__} {found.source.target!r}; cut at a convolutional layer"
        )
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ConfigError(
            f"{label}: replace_last_conv supports a plain Conv2d (groups=1, dilation=1, zero padding); "
            f"{found.source.target!r} is not: set replace_last_conv=false to append the funnel instead"
        )
    chain = [found.source, *reversed(found.tail)]
    for node in chain:
        inputs = [arg for arg in node.all_input_nodes if arg.op != "get_attr"]
        if node is not found.source and len(inputs) != 1:
            raise ConfigError(
                f"{label}: the last conv {found.source.target!r} reaches the cut through {node.name!r}, which also "
                "takes another tensor (a residual sum?); set replace_last_conv=false, or cut outside residual blocks"
            )
        if len(node.users) != 1:
            raise ConfigError(
                f"{label}: the output of {node.name!r} is used twice in the edge, so its width cannot change; "
                "set replace_last_conv=false to append the funnel instead"
            )


def _preserves_channels(node: fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        return isinstance(module, _CHANNEL_PRESERVING_MODULES)
    if node.op == "call_function":
        return node.target in _CHANNEL_PRESERVING_FUNCTIONS
    return node.target in _CHANNEL_PRESERVING_METHODS


def _describe(node: fx.Node, module: nn.Module | None) -> str:
    return f"{type(module).__name__} {node.target!r}" if module is not None else f"{node.op} {node.name!r}"
