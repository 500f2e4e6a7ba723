"""Tiny models, views and synthetic images for the attack tests (each test runs in well under a second or two)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import torch
from torch import nn

from splitveil.attacks import AttackerView, Capability
from splitveil.data import ImageSet
from splitveil.models import create_model
from splitveil.split import SplitModel, cut

INPUT_SHAPE = (1, 12, 12)
NUM_CLASSES = 3
#: The conformance tests invert ``smooth_images(TARGETS, seed=TARGET_SEED)``.
TARGETS, TARGET_SEED = 3, 5


def smooth_images(count: int, shape: tuple[int, int, int] = INPUT_SHAPE, *, seed: int = 0) -> torch.Tensor:
    """Smooth images in [0.1, 0.9]: a sum of two random low-frequency cosines per channel."""
    generator = torch.Generator().manual_seed(seed)
    channels, height, width = shape
    rows = torch.linspace(0, 1, height).view(1, 1, height, 1)
    cols = torch.linspace(0, 1, width).view(1, 1, 1, width)
    image = torch.zeros(count, channels, height, width)
    for _ in range(2):
        scale = torch.tensor([2.0, 2.0, 2 * math.pi]).view(3, 1, 1, 1, 1)  # up to 2 cycles per image
        fy, fx, phase = torch.rand(3, count, channels, 1, 1, generator=generator) * scale
        image = image + torch.cos(2 * math.pi * (fy * rows + fx * cols) + phase)
    return 0.5 + 0.2 * image  # two cosines in [-2, 2] -> [0.1, 0.9]


def labelled(images: torch.Tensor) -> ImageSet:
    """Label images by mean brightness (3 classes), so a cloud can learn the task quickly."""
    brightness = images.flatten(1).mean(1)
    labels = torch.bucketize(brightness, torch.tensor([0.45, 0.55]))
    return ImageSet(images=images.contiguous(), labels=labels)


def tiny_split(at: str = "relu22", *, seed: int = 0, shape: tuple[int, int, int] = INPUT_SHAPE) -> SplitModel:
    """He et al.'s CNN with tiny widths, random weights, cut at ``at``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("he-cnn", input_shape=shape, num_classes=NUM_CLASSES, widths=(4, 8, 8), hidden=16)
    return cut(model.eval(), at)


def view_of(
    split: SplitModel,
    capabilities: Iterable[Capability] = tuple(Capability),
    *,
    aux: ImageSet | None = None,
    shape: tuple[int, int, int] = INPUT_SHAPE,
    target_labels: torch.Tensor | None = None,
) -> AttackerView:
    """A view granting ``capabilities``; an oracle's target labels default to those of :data:`TARGETS`."""
    aux = aux if aux is not None else labelled(smooth_images(48, shape, seed=1))
    if target_labels is None:
        target_labels = labelled(smooth_images(TARGETS, shape, seed=TARGET_SEED)).labels
    return AttackerView.of(split, capabilities, input_shape=shape, aux=aux, target_labels=target_labels)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), f"{name} changed"
    assert all(p.grad is None for p in module.parameters()), "gradients were accumulated on the module"


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Every test here trains or optimises tiny tensors; see the root conftest's ``one_thread``."""
