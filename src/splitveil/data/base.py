"""The data containers every dataset loader returns, and the seeded split helper they share.

Attacks on split inference are only meaningful when the attacker's auxiliary data never touched
the target model's training. The containers therefore keep the four roles (train / val / test /
aux) as separate, named fields, and each row carries its ``source_index`` so disjointness can be
checked rather than assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from splitveil.errors import ConfigError

SPLIT_ROLES: tuple[str, ...] = ("train", "val", "test", "aux")


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A batch of images with integer labels, kept as whole tensors (the datasets are small).

    ``source_index`` is the position of each row in the dataset's source rows (for datasets with
    an official train/test division: the train rows first, then the test rows). It lets callers
    verify that splits are disjoint and trace an attack target back to its origin. When not given
    it defaults to ``0..N-1``.
    """

    images: torch.Tensor  # float32 [N, C, H, W], values in [0, 1]
    labels: torch.Tensor  # int64 [N]
    source_index: torch.Tensor | None = None  # int64 [N]; filled in by __post_init__

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise ValueError("ImageSet images and labels must be torch.Tensor")
        if self.images.dtype != torch.float32:
            raise ValueError(f"ImageSet images must be float32, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(f"ImageSet images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(
                "ImageSet labels must be a 1-D int64 tensor, got "
                f"{self.labels.dtype} with shape {tuple(self.labels.shape)}"
            )
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise ValueError(f"ImageSet has {n} images but {self.labels.shape[0]} labels")
        if self.source_index is None:
            object.__setattr__(self, "source_index", torch.arange(n, dtype=torch.int64))
        elif (
            not isinstance(self.source_index, torch.Tensor)
            or self.source_index.dtype != torch.int64
            or tuple(self.source_index.shape) != (n,)
        ):
            raise ValueError(f"ImageSet source_index must be an int64 tensor of shape ({n},)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def indices(self) -> torch.Tensor:
        """``source_index`` with its type narrowed (it is always set after construction)."""
        assert self.source_index is not None
        return self.source_index

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        """The rows at ``indices`` (positions in this set, not source indices), in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return ImageSet(self.images[index], self.labels[index], self.indices[index])

    def take(self, n: int) -> ImageSet:
        """The first ``n`` rows; asking for more than there are returns all of them."""
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        return ImageSet(self.images[:n], self.labels[:n], self.indices[:n])


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """One dataset divided into the four roles a split-inference privacy experiment needs.

    ``train`` trains the target model, ``val`` is held out for model selection, ``test`` is used
    for evaluation (attack target images come from here) and ``aux`` is the attacker's auxiliary
    data: same distribution, never used to train the target.
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    aux: ImageSet
    num_classes: int
    class_names: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        shapes = {role: tuple(s.images.shape[1:]) for role, s in self.as_dict().items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{self.name}: splits disagree on image shape: {shapes}")
        for role, split in self.as_dict().items():
            if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= self.num_classes):
                raise ValueError(f"{self.name}: {role} labels fall outside [0, {self.num_classes})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image, what a model's first layer must accept."""
        c, h, w = self.train.images.shape[1:]
        return (int(c), int(h), int(w))

    def as_dict(self) -> dict[str, ImageSet]:
        """The four splits keyed by role, in the order ``train, val, test, aux``."""
        return {"train": self.train, "val": self.val, "test": self.test, "aux": self.aux}


def check_fraction(option: str, value: object) -> float:
    """``value`` as a float in ``[0, 1)``, or a ConfigError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{option} must be a number in [0, 1), got {value!r}")
    fraction = float(value)
    if not (0.0 <= fraction < 1.0) or math.isnan(fraction):
        raise ConfigError(f"{option} must be in [0, 1), got {value!r}")
    return fraction


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validate each ``<role>_fraction`` and that together they leave something for the rest."""
    checked = {role: check_fraction(f"{role}_fraction", f) for role, f in fractions.items()}
    total = sum(checked.values())
    if total >= 1.0:
        options = " + ".join(f"{role}_fraction" for role in checked)
        raise ConfigError(f"{options} must sum to less than 1, got {total:g}")
    return checked


def check_limit(limit: object) -> int | None:
    """``limit`` as a positive int or None, or a ConfigError."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    return limit


def make_splits(
    n: int,
    fractions: Mapping[str, float],
    *,
    seed: int,
    remainder: str = "train",
    stratify: torch.Tensor | None = None,
    limit_per_split: int | None = None,
) -> dict[str, torch.Tensor]:
    """Partition ``range(n)`` into disjoint index tensors, one per role, reproducibly.

    Each role in ``fractions`` gets ``round(fraction * n)`` indices (in the mapping's order) and
    ``remainder`` gets the rest. With ``stratify`` (a label per index) the fractions are applied
    per class, so small datasets keep their class balance in every split. Randomness comes only
    from a ``torch.Generator`` seeded with ``seed`` - never the global RNG - so the same seed
    always gives the same splits whatever else the program has drawn. Each split is shuffled, so
    ``limit_per_split`` (keep the first few indices) still yields a random sample of it.
    """
    if remainder in fractions:
        raise ValueError(f"remainder role {remainder!r} must not also have a fraction")
    checked = check_fractions(fractions)
    limit = check_limit(limit_per_split)
    generator = torch.Generator().manual_seed(seed)

    if stratify is None:
        groups = [torch.arange(n, dtype=torch.int64)]
    else:
        labels = torch.as_tensor(stratify).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"stratify has {labels.shape[0]} labels for {n} indices")
        groups = [torch.nonzero(labels == c).reshape(-1) for c in torch.unique(labels)]

    parts: dict[str, list[torch.Tensor]] = {role: [] for role in [*checked, remainder]}
    for group in groups:
        shuffled = group[torch.randperm(len(group), generator=generator)]
        start = 0
        for role, fraction in checked.items():
            count = min(round(fraction * len(group)), len(group) - start)
            parts[role].append(shuffled[start : start + count])
            start += count
        parts[remainder].append(shuffled[start:])

    splits: dict[str, torch.Tensor] = {}
    for role, chunks in parts.items():
        joined = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.int64)
        joined = joined[torch.randperm(len(joined), generator=generator)]
        splits[role] = joined if limit is None else joined[:limit]
    return splits
