"""Tiny splits and helpers for the defense tests (the whole folder runs in a few seconds on one core)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.config import TrainConfig
from splitveil.models import create_model
from splitveil.split import SplitModel, cut
from splitveil.train import TrainHook, TrainState

INPUT_SHAPE = (1, 12, 12)  # the shape of the suite's `tiny_data` blobs (tests/conftest.py)
NUM_CLASSES = 3


def tiny_split(at: str = "relu22", *, seed: int = 0) -> SplitModel:
    """He et al.'s CNN with tiny widths and random weights, cut at ``at`` (z is [8, 6, 6] at relu22)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("he-cnn", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, widths=(4, 8, 8), hidden=16)
    return cut(model, at)


def tiny_config(epochs: int = 1) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=32, lr=1e-2)


def images(count: int, *, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def same_state(module: nn.Module, reference: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return state.keys() == reference.keys() and all(torch.equal(state[k], v) for k, v in reference.items())


class RecordLosses(TrainHook):
    """Keeps the loss names the loop logged at every step, and the model's optimiser."""

    def __init__(self) -> None:
        self.names: list[set[str]] = []
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, state: TrainState) -> None:
        self.optimizer = state.optimizer

    def after_step(self, state: TrainState, batch: object, z: torch.Tensor | None) -> None:
        self.names.append(set(state.last_losses))


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Every test here trains or optimises tiny tensors; see the root conftest's ``one_thread``."""
