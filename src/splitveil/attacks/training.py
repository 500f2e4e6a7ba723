"""The one small loop attacks use to train their own modules (decoders, shadow edges).

Target models train through :func:`splitveil.train.fit`, with validation, best-epoch restore and
defense hooks; an attack's helper networks need none of that: Adam on fixed ``(input, target)``
pairs, seeded, with a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from splitveil.progress import progress_bar
from splitveil.seeding import seeded

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def train_on_pairs(
    module: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: Loss,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    head: nn.Module | None = None,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    repeats: int = 1,
    schedule: Literal["constant", "cosine"] = "constant",
    precision: Precision = "fp32",
    description: str = "training",
    progress: bool = True,
) -> list[float]:
    """Minimise ``loss(head(module(encode(inputs))), targets)`` with Adam on ``module``'s parameters only.

    ``encode`` (default: none) turns each mini-batch of ``inputs`` into the module's input when the
    batch is drawn: an attacker querying a stochastic edge afresh, so that every pass sees new noise
    (or dropout) draws instead of one fixed draw per image that the module could learn by heart.
    ``repeats`` passes over the pairs make one epoch (with ``encode``: that many draws per image and
    epoch). ``schedule="cosine"`` anneals the learning rate to zero over the run.

    ``precision="bf16"`` runs ``module`` (and ``head``) under CPU autocast to bfloat16: about 1.8x
    faster for convolutional decoders on CPUs with AVX-512 BF16 (docs/BENCHMARKS.md), slow where
    bfloat16 is emulated. Weights, optimiser state, ``encode`` (the edge being queried) and the loss
    stay in float32.

    Mini-batches are shuffled every epoch with a ``torch.Generator`` seeded from ``seed``, and the
    loop runs inside ``splitveil.seeding.seeded`` the same way (for dropout or noise layers), so
    the result depends on ``seed`` alone and the caller's global RNG is untouched.

    ``head`` is an optional fixed module applied after ``module`` (e.g. a frozen cloud half when
    training a shadow edge); the optimiser never sees its parameters, and the caller must freeze
    it (``requires_grad_(False)``, eval mode) so that no gradient is accumulated on it either.

    ``module`` is left in eval mode. Returns the mean training loss of every epoch.
    """
    count = len(inputs)
    if count == 0:
        raise ValueError("train_on_pairs needs at least one (input, target) pair")
    if len(targets) != count:
        raise ValueError(f"{count} inputs but {len(targets)} targets")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    history: list[float] = []
    with seeded(seed):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        steps_per_epoch = repeats * len(_batches(torch.arange(count), batch_size))
        annealing = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
            if schedule == "cosine"
            else None
        )
        module.train()
        with progress_bar(description, total=epochs * steps_per_epoch, enabled=progress) as advance:
            for _ in range(epochs):
                total, seen = 0.0, 0
                for _ in range(repeats):
                    for index in _batches(torch.randperm(count, generator=generator), batch_size):
                        batch = inputs[index] if encode is None else encode(inputs[index])
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                            prediction = module(batch)
                            if head is not None:
                                prediction = head(prediction)
                        value = loss(prediction.float(), targets[index])
                        optimizer.zero_grad(set_to_none=True)
                        value.backward()
                        optimizer.step()
                        if annealing is not None:
                            annealing.step()
                        total += value.item() * len(index)
                        seen += len(index)
                        advance(loss=value.item())
                history.append(total / seen)
    module.eval()
    return history


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` in chunks of ``batch_size``; a trailing chunk of one joins the previous chunk,
    because BatchNorm cannot compute training statistics from a single sample."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks
