"""The cost of a cut: what the edge computes and stores, and what crosses the network.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplies and
convolutions (2 FLOPs per multiply-accumulate) and ignores cheap elementwise ops such as ReLU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TypedDict, cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitveil.split import SplitModel, cut, cut_aliases


class CostRow(TypedDict):
    """:meth:`CostProfile.to_dict`: the profile as JSON-ready values."""

    cut: str
    edge_flops: int
    cloud_flops: int
    edge_params: int
    cloud_params: int
    feature_shape: list[int]
    feature_bytes: int


class ModelDescription(TypedDict):
    """:func:`describe_model`'s answer."""

    name: str
    params: int
    input_shape: list[int]
    cuts: list[CostRow]


@dataclass(frozen=True)
class CostProfile:
    """Per-sample cost of one cut (FLOPs of one forward pass, float32 feature)."""

    cut: str
    edge_flops: int
    cloud_flops: int
    edge_params: int
    cloud_params: int
    feature_shape: tuple[int, ...]
    feature_bytes: int

    @property
    def edge_flops_fraction(self) -> float:
        total = self.edge_flops + self.cloud_flops
        return self.edge_flops / total if total else 0.0

    def to_dict(self) -> CostRow:
        row = asdict(self)
        row["feature_shape"] = list(self.feature_shape)
        return cast(CostRow, row)  # the dataclass's fields, feature_shape as a list


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``module(x)`` as counted by torch's flop counter."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


def count_params(module: nn.Module) -> int:
    """Number of distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def profile_split(split: SplitModel, input_shape: tuple[int, ...]) -> CostProfile:
    """Profile ``split`` on one sample of ``input_shape`` (C, H, W), in eval mode."""
    was_training = split.training
    split.eval()
    try:
        x = torch.zeros(1, *input_shape)
        with torch.no_grad():
            z = split.edge(x)
        return CostProfile(
            cut=split.cut_name,
            edge_flops=count_flops(split.edge, x),
            cloud_flops=count_flops(split.cloud, z),
            edge_params=count_params(split.edge),
            cloud_params=count_params(split.cloud),
            feature_shape=tuple(z.shape[1:]),
            feature_bytes=z[0].numel() * z.element_size(),
        )
    finally:
        split.train(was_training)


def profile_cuts(model: nn.Module, input_shape: tuple[int, ...], cuts: list[str] | None = None) -> list[CostProfile]:
    """Profile every declared cut of ``model`` (or the given ``cuts``), shallowest first."""
    names = cuts if cuts is not None else list(cut_aliases(model))
    return [profile_split(cut(model, at=name), input_shape) for name in names]


def describe_model(name: str, *, input_shape: tuple[int, int, int], num_classes: int = 10) -> ModelDescription:
    """A zoo model's name, parameter count and the cost profile of each of its named cuts."""
    from splitveil.models import create_model

    model = create_model(name, input_shape=input_shape, num_classes=num_classes)
    return {
        "name": name,
        "params": count_params(model),
        "input_shape": list(input_shape),
        "cuts": [profile.to_dict() for profile in profile_cuts(model, input_shape)],
    }
