"""Small graph surgery on cut halves: find the layer that first reads a half's input (or last writes
its output) and swap it for a resized copy.

Salted DNNs widen the edge layer after the salted layer; PrivyNet slices the local network's last
convolution to the channels it keeps and resizes the cloud's first layer to match. Both walk a
torch.fx graph through modules that treat every channel alike (activations, pooling, dropout), so a
change in the number of channels passes through them untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import fx, nn

from splitveil.errors import ConfigError

#: Modules that act on each channel alike (or on none): channel counts pass through them unchanged.
#: (The funnel's walk back from the cut adds BatchNorm2d, whose per-channel parameters it rebuilds.)
CHANNEL_AGNOSTIC: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)

Layer = nn.Conv2d | nn.Linear


def first_layer(module: fx.GraphModule) -> tuple[str, Layer]:
    """The conv or linear layer that first reads ``module``'s input, through channel-agnostic modules.

    Raises:
        ConfigError: the input branches, or meets anything else first (BatchNorm, Flatten, a function).
    """
    node = next(n for n in module.graph.nodes if n.op == "placeholder")
    while True:
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            raise ConfigError(f"the input must feed a single chain of modules, not {[str(u) for u in users]}")
        node = users[0]
        layer = module.get_submodule(str(node.target))
        if isinstance(layer, Layer):
            return str(node.target), layer
        if not isinstance(layer, CHANNEL_AGNOSTIC):
            raise ConfigError(
                f"the input passes through {type(layer).__name__} ({node.target}) before any conv or linear layer"
            )


def last_conv(module: fx.GraphModule) -> tuple[str, nn.Conv2d]:
    """The convolution whose channels reach ``module``'s output through channel-agnostic modules only.

    Raises:
        ConfigError: the output comes from anything else (a sum, BatchNorm, a linear layer...).
    """
    output = next(n for n in module.graph.nodes if n.op == "output")
    node = output.args[0]
    while isinstance(node, fx.Node) and node.op == "call_module":
        layer = module.get_submodule(str(node.target))
        if isinstance(layer, nn.Conv2d):
            return str(node.target), layer
        if not isinstance(layer, CHANNEL_AGNOSTIC) or len(node.all_input_nodes) != 1:
            break
        node = node.all_input_nodes[0]
    raise ConfigError("the output does not come from a convolution through activations and pooling only")


def replace_module(module: nn.Module, target: str, replacement: nn.Module) -> None:
    """Set ``module.<target>`` to ``replacement`` (only this module's reference changes)."""
    parent_name, _, leaf = target.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, leaf, replacement)


def conv_pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A size ``nn.Conv2d`` stores (kernel, stride, dilation): always a pair, though torch types it
    as a tuple of any length."""
    return cast(tuple[int, int], size)


def conv_padding(padding: str | tuple[int, ...]) -> str | tuple[int, int]:
    """``nn.Conv2d``'s stored padding: a mode name or a pair, though torch types it as a tuple of any length."""
    return cast("str | tuple[int, int]", padding)


def conv_like(conv: nn.Conv2d, *, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A freshly initialised convolution configured like ``conv`` but for the given channel counts."""
    if conv.groups != 1:
        raise ConfigError(f"cannot resize a grouped convolution (groups={conv.groups})")
    return nn.Conv2d(
        in_channels,
        out_channels,
        conv_pair(conv.kernel_size),
        stride=conv_pair(conv.stride),
        padding=conv_padding(conv.padding),
        dilation=conv_pair(conv.dilation),
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)


def with_inputs(layer: Layer, inputs: int) -> Layer:
    """A fresh copy of ``layer``'s configuration reading ``inputs`` channels (or features)."""
    if isinstance(layer, nn.Conv2d):
        return conv_like(layer, in_channels=inputs, out_channels=layer.out_channels)
    fresh = nn.Linear(inputs, layer.out_features, bias=layer.bias is not None)
    return fresh.to(device=layer.weight.device, dtype=layer.weight.dtype)


def widen_input(module: fx.GraphModule, extra: int) -> int:
    """Give ``module``'s first conv/linear layer ``extra`` more inputs; return its former input count.

    The original weights are kept for the original inputs; the new ones start from the layer's
    default initialisation.
    """
    target, layer = first_layer(module)
    original = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
    widened = with_inputs(layer, original + extra)
    with torch.no_grad():
        widened.weight[:, :original] = layer.weight
        if layer.bias is not None and widened.bias is not None:  # widened has a bias exactly when layer has
            widened.bias.copy_(layer.bias)
    replace_module(module, target, widened)
    return original


def resize_input(module: fx.GraphModule, inputs: int) -> None:
    """Replace ``module``'s first conv/linear layer by a freshly initialised one reading ``inputs``."""
    target, layer = first_layer(module)
    replace_module(module, target, with_inputs(layer, inputs))


def keep_output_channels(module: fx.GraphModule, keep: Sequence[int]) -> None:
    """Slice ``module``'s last convolution to the output channels ``keep`` (weights kept, in that order)."""
    target, conv = last_conv(module)
    index = torch.as_tensor(list(keep), dtype=torch.long)
    if len(index) == 0 or int(index.min()) < 0 or int(index.max()) >= conv.out_channels or len(set(keep)) != len(keep):
        raise ConfigError(f"channels to keep must be distinct indices in [0, {conv.out_channels}), got {list(keep)}")
    sliced = conv_like(conv, in_channels=conv.in_channels, out_channels=len(index))
    with torch.no_grad():
        sliced.weight.copy_(conv.weight[index])
        if conv.bias is not None and sliced.bias is not None:  # sliced has a bias exactly when conv has
            sliced.bias.copy_(conv.bias[index])
    replace_module(module, target, sliced)
