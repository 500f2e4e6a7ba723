"""Instance re-identification: can a reconstruction pick out its own original among look-alikes?

Class-level scores (privacy accuracy, the class-mean image's SSIM) cannot tell an attacker who
learned *which* image was sent from one who learned only *what kind* of image it was, and the
cloud knows the kind anyway: it computes the answer. Re-identification asks the instance question.
For each target ``i`` the candidates are the target itself plus ``N - 1`` other images of the same
true class, drawn from a pool (the test split) with a seeded generator; a hit at ``k`` is when the
target is among the ``k`` candidates nearest to the reconstruction ``x_hat_i``::

    top_k = (1 / T) * sum_i [ #{c != i : d(x_hat_i, c) <= d(x_hat_i, x_i)} < k ]

Ties count against the attacker (a candidate as near as the target ranks before it), so a constant
distance never scores. Chance is ``k / N``. The attacker may choose the distance: pixel L2,
``1 - SSIM``, or the L2 distance between embeddings of an independent network (the penultimate
layer of the evaluation classifier, :func:`classifier_embedding`); the reported figure is the best
distance's, as an attacker who tried all three would report it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from splitveil.metrics.image import ssim_fast

Distance = Literal["l2", "ssim", "embedding"]
DISTANCES: tuple[Distance, ...] = ("l2", "ssim", "embedding")
Embedding = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reidentification:
    """Re-identification rates out of ``candidates`` per target, under the best distance."""

    top1: float
    top5: float
    candidates: int
    distance: str
    #: ``{distance: (top1, top5)}`` for every distance tried.
    by_distance: Mapping[str, tuple[float, float]]

    @property
    def chance_top1(self) -> float:
        return 1 / self.candidates

    @property
    def chance_top5(self) -> float:
        return min(5, self.candidates) / self.candidates


def candidate_sets(
    pool_labels: torch.Tensor, target_indices: torch.Tensor, *, candidates: int, seed: int = 0
) -> torch.Tensor:
    """``[T, N]`` pool indices: column 0 is each target, then ``N - 1`` others of its class, drawn
    without replacement by a generator seeded with ``seed``.

    Example:
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1])
        >>> sets = candidate_sets(labels, torch.tensor([0, 1]), candidates=3)
        >>> sets[:, 0].tolist(), bool((labels[sets[0]] == 0).all()), bool((labels[sets[1]] == 1).all())
        ([0, 1], True, True)
    """
    if candidates < 2:
        raise ValueError(f"re-identification needs at least 2 candidates per target, got {candidates}")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in target_indices.tolist():
        same_class = torch.nonzero(pool_labels == pool_labels[index]).flatten()
        others = same_class[same_class != index]
        if len(others) < candidates - 1:
            raise ValueError(
                f"class {int(pool_labels[index])} has {len(others)} other images in the pool, fewer than the "
                f"{candidates - 1} re-identification needs; lower audit.reid.candidates or use a larger pool"
            )
        drawn = others[torch.randperm(len(others), generator=generator)[: candidates - 1]]
        rows.append(torch.cat([torch.tensor([index]), drawn]))
    return torch.stack(rows)


def reidentification(
    x_hat: torch.Tensor,
    pool: torch.Tensor,
    sets: torch.Tensor,
    *,
    distances: Sequence[Distance] = DISTANCES,
    embed: Embedding | None = None,
) -> Reidentification:
    """Top-1 and top-5 re-identification of reconstructions ``x_hat`` (``[T, C, H, W]``) among the
    candidate ``sets`` (``[T, N]`` indices into ``pool``, the target first: :func:`candidate_sets`).

    ``embed`` maps images to vectors; the ``embedding`` distance is skipped without it.

    Example:
        >>> pool = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
        >>> sets = torch.tensor([[0, 1, 2], [3, 4, 5]])
        >>> result = reidentification(pool[[0, 3]], pool, sets, distances=("l2",))
        >>> result.top1, result.candidates
        (1.0, 3)
    """
    if x_hat.ndim != 4 or sets.ndim != 2 or len(x_hat) != len(sets):
        raise ValueError(
            f"need one candidate set per reconstruction: x_hat {tuple(x_hat.shape)}, sets {tuple(sets.shape)}"
        )
    if len(x_hat) == 0:
        raise ValueError("re-identification of no reconstructions is undefined")
    chosen = [name for name in distances if name != "embedding" or embed is not None]
    if not chosen:
        raise ValueError(f"no usable distance among {list(distances)} (the embedding distance needs embed=)")
    by_distance: dict[str, tuple[float, float]] = {}
    for name in chosen:
        table = _distance_table(name, x_hat, pool, sets, embed)
        # Candidates at least as near as the target (itself excluded) rank before it.
        rank = (table[:, 1:] <= table[:, :1]).sum(dim=1)
        by_distance[name] = (float((rank < 1).float().mean()), float((rank < 5).float().mean()))
    best = max(chosen, key=lambda name: by_distance[name])
    top1, top5 = by_distance[best]
    return Reidentification(top1, top5, sets.shape[1], best, by_distance)


@torch.no_grad()
def _distance_table(
    name: str, x_hat: torch.Tensor, pool: torch.Tensor, sets: torch.Tensor, embed: Embedding | None
) -> torch.Tensor:
    """``[T, N]`` distances from each reconstruction to each of its candidates."""
    count, size = sets.shape
    if name == "embedding":
        assert embed is not None
        used = sets.unique()
        position = torch.full((len(pool),), -1, dtype=torch.long)
        position[used] = torch.arange(len(used))
        candidates = embed(pool[used]).flatten(1)[position[sets]]  # [T, N, D]
        return (embed(x_hat).flatten(1)[:, None] - candidates).square().sum(dim=2)
    rows = []
    for start in range(0, count, max(1, 4096 // size)):  # bounded memory: about 4,096 pairs at a time
        block = sets[start : start + max(1, 4096 // size)]
        candidates = pool[block.flatten()]
        repeated = x_hat[start : start + len(block)].repeat_interleave(size, dim=0)
        if name == "l2":
            values = (repeated - candidates).square().flatten(1).sum(dim=1)
        elif name == "ssim":
            values = 1 - ssim_fast(repeated, candidates)
        else:
            raise ValueError(f"unknown re-identification distance {name!r}; choose from {list(DISTANCES)}")
        rows.append(values.view(len(block), size))
    return torch.cat(rows)


def classifier_embedding(classifier: nn.Module, *, batch_size: int = 512) -> Embedding:
    """Images -> the input of ``classifier``'s last linear layer (its penultimate representation).

    The classifier runs in eval mode without gradients; its mode is restored after each call.
    """
    last = [module for module in classifier.modules() if isinstance(module, nn.Linear)]
    if not last:
        raise ValueError(f"{type(classifier).__name__} has no linear layer to take an embedding before")

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = last[-1].register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
        was_training = classifier.training
        classifier.eval()
        try:
            for start in range(0, len(images), batch_size):
                classifier(images[start : start + batch_size])
        finally:
            handle.remove()
            classifier.train(was_training)
        return torch.cat(captured)

    return embed
