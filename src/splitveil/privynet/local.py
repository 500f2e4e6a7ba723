"""PrivyNet's two halves: a frozen local network from a model pretrained on public data, and a
cloud network trained on what it sends (Li et al., arXiv 1709.06161).

The local NN is the first layers of a network trained on *public* data — no training on the
device — with three knobs [paper]: how many layers (``layer``, a cut of the base model), how many
output channels, and which ones (``keep``). The kept channels are sliced out of the last
convolution, so dropping channels also saves the device computation and storage. The cloud NN is
the rest of the base architecture, freshly initialised, its first layer sized to the kept channels,
trained on the features for the target task.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import torch
from torch import fx, nn

from splitveil.split import SplitModel, cut
from splitveil.surgery import keep_output_channels, last_conv, resize_input


class FrozenLocal(nn.Module):
    """A local network whose weights never change: no gradients, and always in eval mode."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def train(self, mode: bool = True) -> FrozenLocal:
        super().train(mode)
        self.network.eval()  # BatchNorm statistics and dropout stay as pretrained
        return self


def local_width(pretrained: nn.Module, layer: str) -> int:
    """Output channels of ``pretrained``'s local network cut at ``layer`` (before any are dropped)."""
    edge = cast(fx.GraphModule, cut(pretrained, at=layer).edge)  # cut() builds both halves as GraphModules
    return last_conv(edge)[1].out_channels


def local_network(pretrained: nn.Module, *, layer: str, keep: Sequence[int]) -> FrozenLocal:
    """The first layers of ``pretrained`` up to ``layer``, keeping output channels ``keep``, frozen."""
    edge = copy.deepcopy(cast(fx.GraphModule, cut(pretrained, at=layer).edge))  # cut() builds GraphModules
    keep_output_channels(edge, keep)
    return FrozenLocal(edge)


def privynet_split(pretrained: nn.Module, fresh: nn.Module, *, layer: str, keep: Sequence[int]) -> SplitModel:
    """Local NN from ``pretrained`` (frozen) + cloud NN from ``fresh`` (the target task's architecture).

    ``fresh`` is a newly initialised model for the target task whose cloud half, from ``layer`` on,
    becomes the cloud NN; its first layer is re-created for ``len(keep)`` input channels.
    """
    cloud = copy.deepcopy(cast(fx.GraphModule, cut(fresh, at=layer).cloud))  # cut() builds GraphModules
    resize_input(cloud, len(keep))
    return SplitModel(local_network(pretrained, layer=layer, keep=keep), cloud, cut_name=layer)
