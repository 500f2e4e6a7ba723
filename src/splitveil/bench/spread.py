"""Spread over seeds: one spec run with several seeds (one run directory each), summarised per split.

A defended model's accuracy and its leakage move with the seed that trained it: the same spec gave
defended accuracies up to 2 points apart on two machines. One run is one draw, so a claim about a
defense is made from several seeds: the mean, and the lowest and highest value seen. Each run
directory contributes its :func:`~splitveil.bench.frontier.frontier_points` (the strongest attack of
every deployed split); this module lines them up by split and summarises each figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from splitveil.bench.frontier import FrontierPoint, frontier_points
from splitveil.bench.results import ResultRow
from splitveil.bench.verdict import at_floor
from splitveil.errors import ConfigError


@dataclass(frozen=True)
class Spread:
    """Mean, lowest and highest of one figure over seeds."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(sum(values) / len(values), min(values), max(values))

    @property
    def width(self) -> float:
        return self.high - self.low

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class SplitSpread:
    """One deployed split (cut, defense, strength) over the seeds that ran it."""

    cut: str
    cut_index: int
    defense: str
    strength: float
    seeds: tuple[int, ...]
    accuracy: Spread
    max_ssim: Spread
    #: Over the seeds that measured it (an output oracle, re-identification); None where none did.
    excess_ssim: Spread | None
    reid_top1: Spread | None
    #: How many of the seeds put this split at the floor (:func:`~splitveil.bench.verdict.at_floor`).
    seeds_at_floor: int


def seed_spread(runs: Sequence[Sequence[ResultRow]]) -> list[SplitSpread]:
    """Summarise the rows of several runs of one spec, one run per seed, per deployed split.

    Every run must hold a single seed, and no two runs the same one (a spread over one seed counted
    twice would look tighter than it is). A split missing from some runs is summarised over the
    seeds that have it, and its ``seeds`` say which.
    """
    points_by_seed = {seed: frontier_points(rows) for seed, rows in _runs_by_seed(runs).items()}
    splits: dict[tuple[str, str, float], list[tuple[int, FrontierPoint]]] = {}
    for seed, points in points_by_seed.items():
        for point in points:
            splits.setdefault((point.cut, point.defense, point.strength), []).append((seed, point))
    summaries = [_summarise(seeded) for seeded in splits.values()]
    return sorted(summaries, key=lambda s: (s.cut_index, s.defense != "none", s.defense, s.strength))


def _runs_by_seed(runs: Sequence[Sequence[ResultRow]]) -> dict[int, Sequence[ResultRow]]:
    by_seed: dict[int, Sequence[ResultRow]] = {}
    for index, rows in enumerate(runs):
        seeds = {row.seed for row in rows}
        if not seeds:  # rows are attacked splits: a run of a spec with `attacks: []` has none, finished or not
            raise ConfigError(
                f"run {index + 1} holds no attack rows; give one finished run directory per seed of a spec with "
                "attacks (the spread is over the strongest attack; a deploy-only run keeps its accuracies in its "
                "deploy cells, in results.sqlite)"
            )
        if len(seeds) != 1:
            raise ConfigError(f"run {index + 1} holds seeds {sorted(seeds)}; give one run directory per seed")
        (seed,) = seeds
        if seed in by_seed:
            raise ConfigError(f"two runs have seed {seed}; run the spec with a different seed for each directory")
        by_seed[seed] = rows
    return by_seed


def _summarise(seeded: list[tuple[int, FrontierPoint]]) -> SplitSpread:
    points = [point for _, point in seeded]
    first = points[0]
    return SplitSpread(
        cut=first.cut,
        cut_index=first.cut_index,
        defense=first.defense,
        strength=first.strength,
        seeds=tuple(sorted(seed for seed, _ in seeded)),
        accuracy=Spread.of([p.accuracy for p in points]),
        max_ssim=Spread.of([p.max_ssim for p in points]),
        excess_ssim=_measured(points, lambda p: p.excess_ssim),
        reid_top1=_measured(points, lambda p: p.reid_top1),
        seeds_at_floor=sum(at_floor(p) for p in points),
    )


def _measured(points: Sequence[FrontierPoint], figure: Callable[[FrontierPoint], float | None]) -> Spread | None:
    values = [value for value in map(figure, points) if value is not None]
    return Spread.of(values) if values else None


def spread_table(spreads: Sequence[SplitSpread]) -> tuple[list[str], list[list[str]]]:
    """Header and lines for :func:`~splitveil.bench.tables.as_markdown` or a rich table: each figure as
    ``mean [lowest, highest]`` over the split's seeds."""
    header = ["cut", "defense", "strength", "seeds", "accuracy", "max SSIM", "excess SSIM", "reid top-1", "at floor"]
    lines = [
        [
            s.cut,
            s.defense,
            f"{s.strength:g}",
            ",".join(map(str, s.seeds)),
            str(s.accuracy),
            str(s.max_ssim),
            "—" if s.excess_ssim is None else str(s.excess_ssim),
            "—" if s.reid_top1 is None else str(s.reid_top1),
            f"{s.seeds_at_floor}/{len(s.seeds)}",
        ]
        for s in spreads
    ]
    return header, lines
