"""Attack wall times, measured side by side in one process so the ratio is what matters.

rMLE optimises every target image at once (the loss is a sum over images, so each image follows
its own trajectory); this measures what that batching buys over inverting one image at a time.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import cast

import torch

from splitveil.attacks.rmle import resolve_settings, rmle_invert
from splitveil.split import SplitModel


@dataclass(frozen=True)
class BatchingTiming:
    cut: str
    images: int
    steps: int
    batched_seconds: float
    looped_seconds: float

    @property
    def batched_per_image(self) -> float:
        return self.batched_seconds / self.images

    @property
    def looped_per_image(self) -> float:
        return self.looped_seconds / self.images

    @property
    def speedup(self) -> float:
        return self.looped_seconds / self.batched_seconds

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            **asdict(self),
            "batched_per_image": self.batched_per_image,
            "looped_per_image": self.looped_per_image,
            "speedup": self.speedup,
        }


def time_rmle_batching(
    split: SplitModel, images: torch.Tensor, *, steps: int | None = None, repeats: int = 1
) -> BatchingTiming:
    """Invert ``images``' features with rMLE batched and one at a time (alternating, best of ``repeats``)."""
    with torch.no_grad():
        z = split.edge(images)
    input_shape = cast(tuple[int, int, int], tuple(images.shape[1:]))  # images are NCHW
    settings = resolve_settings("auto", feature_shape=tuple(z.shape[1:]), input_shape=input_shape, steps=steps)
    invert = functools.partial(
        rmle_invert, input_shape=input_shape, steps=settings.steps, lr=settings.lr, tv_weight=settings.tv_weight
    )
    batched, looped = [], []
    for _ in range(repeats):  # alternate so that background load affects both sides alike
        started = time.perf_counter()
        invert(split.edge, z)
        batched.append(time.perf_counter() - started)
        started = time.perf_counter()
        for index in range(len(z)):
            invert(split.edge, z[index : index + 1])
        looped.append(time.perf_counter() - started)
    return BatchingTiming(split.cut_name, len(images), settings.steps, min(batched), min(looped))
