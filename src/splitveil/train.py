"""The one training loop. Defenses plug in through loss terms and hooks; none owns a loop.

Deterministic on CPU: shuffling uses an explicit ``torch.Generator`` seeded from the run's seed, and
the loop runs inside ``splitveil.seeding.seeded`` so layers that draw from torch's global generator
(dropout, noise defenses) are seeded too while the caller's global RNG state is left untouched.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.blocks.noise_source import silence_noise
from splitveil.config import TrainConfig
from splitveil.data import DatasetSplits, ImageSet
from splitveil.progress import progress_bar
from splitveil.seeding import seeded
from splitveil.split import SplitModel


@dataclass(frozen=True)
class Batch:
    """One mini-batch: images ``x`` in [0, 1] (NCHW) and integer labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor


class LossTerm(Protocol):
    """A regulariser added to the task loss; ``z`` is the transmitted feature (None if unsplit)."""

    def __call__(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass
class TrainState:
    """What hooks see: the model, its optimiser, and where the loop is."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    generator: torch.Generator
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None
    epoch: int = 0
    step: int = 0
    last_losses: dict[str, float] = field(default_factory=dict)


class TrainHook:
    """Extension points of the loop (e.g. an adversary's inner step). Methods default to no-ops."""

    def on_train_start(self, state: TrainState) -> None:
        """Called once before the first epoch."""

    def after_step(self, state: TrainState, batch: Batch, z: torch.Tensor | None) -> None:
        """Called after every optimiser step, with the batch and its (detached) feature."""

    def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
        """Called after each epoch's evaluation."""


def distillation(teacher: nn.Module, *, weight: float, temperature: float) -> LossTerm:
    """Knowledge distillation (Hinton et al., 2015) from ``teacher``'s logits on the same batch:
    ``weight · T² · KL(softmax(teacher / T) ‖ softmax(logits / T))``. The teacher runs in eval mode
    without gradients and is never changed."""
    teacher.eval()

    def term(batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target = F.softmax(teacher(batch.x) / temperature, dim=1)
        student = F.log_softmax(logits / temperature, dim=1)
        return {"distill": weight * temperature**2 * F.kl_div(student, target, reduction="batchmean")}

    return term


class WarmUp(TrainHook):
    """Holds loss terms at 0 for the first ``delay`` optimiser steps, then ramps them linearly to full
    weight over the next ``steps``.

    A defense's privacy terms at full weight from the first step can pull a model away from its task
    before it has adapted to the defense; warming them up lets it adapt first. From scratch, a ramp
    alone is not enough when the terms are scale-invariant (distance correlation, channel
    correlation): on a freshly initialised edge the feature is tiny, so their gradients dwarf the
    task's by orders of magnitude even at a small weight, and the edge collapses to a constant
    feature, which minimises them all. ``delay`` steps of the task alone give the feature its scale
    first. Given ``quiet``, its noise blocks are silent during the delay too: a salted edge cannot
    learn to carry its salt through strong noise from scratch, and learns it without. Pass it as a
    hook and its :meth:`scaled` terms as loss terms.
    """

    def __init__(self, steps: int, *, delay: int = 0, quiet: nn.Module | None = None) -> None:
        self.steps = steps
        self.delay = delay
        self.quiet = quiet
        self.taken = 0
        self._restore_noise: Callable[[], None] | None = None

    @property
    def factor(self) -> float:
        """The weight of the terms at the current step: 0 during the delay, then ``(taken − delay) / steps``, at most 1."""
        if self.taken < self.delay:
            return 0.0
        return 1.0 if self.steps <= 0 else min(1.0, (self.taken - self.delay) / self.steps)

    def scaled(self, term: LossTerm) -> LossTerm:
        def warmed(batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
            factor = self.factor
            return {name: factor * value for name, value in term(batch, z, logits).items()}

        return warmed

    def on_train_start(self, state: TrainState) -> None:
        self.taken = 0
        if self.quiet is not None and self.delay > 0 and self._restore_noise is None:
            self._restore_noise = silence_noise(self.quiet)

    def after_step(self, state: TrainState, batch: Batch, z: torch.Tensor | None) -> None:
        self.taken += 1
        if self.taken >= self.delay and self._restore_noise is not None:
            self._restore_noise()
            self._restore_noise = None


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    seconds: float


@dataclass
class TrainResult:
    """The trained model (best epoch by validation accuracy restored) and its history."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    seconds: float

    def metrics(self) -> dict[str, float | int]:
        return {
            "test_accuracy": self.test_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "train_seconds": round(self.seconds, 2),
        }


def iterate_batches(data: ImageSet, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Mini-batches of ``data``, shuffled with ``generator`` if given, in order otherwise."""
    order = torch.randperm(len(data), generator=generator) if generator is not None else torch.arange(len(data))
    for start in range(0, len(data), batch_size):
        index = order[start : start + batch_size]
        yield Batch(data.images[index], data.labels[index])


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, *, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for batch in iterate_batches(data, batch_size):
        logits = model(batch.x)
        loss_sum += F.cross_entropy(logits, batch.y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == batch.y).sum())
    model.train(was_training)
    count = max(len(data), 1)
    return {"accuracy": correct / count, "loss": loss_sum / count}


def fit(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    *,
    seed: int,
    loss_terms: Sequence[LossTerm] = (),
    hooks: Sequence[TrainHook] = (),
    keep: Literal["best", "last"] = "best",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``data.train`` with cross-entropy plus ``loss_terms``.

    After every epoch the model is evaluated on ``data.val``; with ``keep="best"`` the best epoch's
    weights are restored at the end (with ``config.patience``, training stops early when the
    validation accuracy has not improved for that many epochs). ``keep="last"`` keeps the last
    epoch's weights and runs every epoch: a defense trades accuracy for privacy, and picking the
    most accurate epoch would pick the least defended one. Test accuracy is measured once, at the end.
    """
    started = time.perf_counter()
    with seeded(seed):
        generator = torch.Generator().manual_seed(seed)
        optimizer = _make_optimizer(model, config)
        state = TrainState(
            model=model,
            optimizer=optimizer,
            config=config,
            generator=generator,
            schedule=_make_schedule(optimizer, config, total_steps=config.epochs * steps_per_epoch(data, config)),
        )
        for hook in hooks:
            hook.on_train_start(state)
        history: list[EpochRecord] = []
        best_state, best_epoch, best_accuracy = copy.deepcopy(model.state_dict()), 0, -1.0
        for epoch in range(1, config.epochs + 1):
            state.epoch = epoch
            record = _run_epoch(state, data, loss_terms, hooks, progress=progress)
            history.append(record)
            for hook in hooks:
                hook.on_epoch_end(state, record)
            if record.val_accuracy > best_accuracy:
                best_state, best_epoch, best_accuracy = copy.deepcopy(model.state_dict()), epoch, record.val_accuracy
            elif keep == "best" and config.patience is not None and epoch - best_epoch >= config.patience:
                break
        if keep == "best":
            model.load_state_dict(best_state)
    test = evaluate(model, data.test, batch_size=config.eval_batch_size)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best_accuracy,
        test_accuracy=test["accuracy"],
        seconds=time.perf_counter() - started,
    )


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def steps_per_epoch(data: DatasetSplits, config: TrainConfig) -> int:
    return -(-len(data.train) // config.batch_size)


def _make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "constant":
        return None
    # Stepped once per batch, so the rate reaches zero at the last step of the last epoch.
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))


def _run_epoch(
    state: TrainState,
    data: DatasetSplits,
    loss_terms: Sequence[LossTerm],
    hooks: Sequence[TrainHook],
    *,
    progress: bool,
) -> EpochRecord:
    model, config = state.model, state.config
    started = time.perf_counter()
    model.train()
    total_loss, seen = 0.0, 0
    steps = steps_per_epoch(data, config)
    with progress_bar(f"epoch {state.epoch}/{config.epochs}", total=steps, enabled=progress) as advance:
        for batch in iterate_batches(data.train, config.batch_size, generator=state.generator):
            z, logits = _forward(model, batch.x)
            losses = {"task": F.cross_entropy(logits, batch.y)}
            for term in loss_terms:
                for name, value in term(batch, z, logits).items():
                    if name in losses:
                        raise ValueError(f"two loss terms are both named {name!r}; give each term its own name")
                    losses[name] = value
            loss = torch.stack(list(losses.values())).sum()
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            if state.schedule is not None:
                state.schedule.step()
            state.step += 1
            state.last_losses = {name: value.item() for name, value in losses.items()}
            for hook in hooks:
                hook.after_step(state, batch, None if z is None else z.detach())
            total_loss += loss.item() * len(batch.y)
            seen += len(batch.y)
            advance(loss=loss.item())
    val = evaluate(model, data.val, batch_size=config.eval_batch_size)
    return EpochRecord(
        epoch=state.epoch,
        train_loss=total_loss / max(seen, 1),
        val_accuracy=val["accuracy"],
        val_loss=val["loss"],
        seconds=time.perf_counter() - started,
    )


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    if isinstance(model, SplitModel):
        return model.forward_with_features(x)
    return None, model(x)
