"""Spread over seeds: one spec run with several seeds (one run directory each), summarised per split.

A defended model's accuracy and its leakage move with the seed that trained it: the same spec gave
defended accuracies up to 2 points apart on two machines. One run is one draw, so a claim about a
defense is made from several seeds: the mean, and the lowest and highest value seen. Each run
directory contributes its :func:`~splitveil.bench.frontier.frontier_points` (the strongest attack of
every deployed split); this module lines them up by split and summarises each figure. A run of a
spec without attacks has no rows; its deploy cells still give each split's accuracy
(:func:`deployed_accuracies`), which :func:`accuracy_spread` summarises alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from splitveil.bench.cell_results import DeployResult, TrainResult
from splitveil.bench.cells import TRAIN_ID
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
    #: The strongest attack's SSIM; None for runs without attacks (:func:`accuracy_spread`).
    max_ssim: Spread | None
    #: Over the seeds that measured it (an output oracle, re-identification); None where none did.
    excess_ssim: Spread | None
    reid_top1: Spread | None
    #: How many of the seeds put this split at the floor (:func:`~splitveil.bench.verdict.at_floor`);
    #: None without attacks, where the floor is not measured.
    seeds_at_floor: int | None


@dataclass(frozen=True)
class DeployedAccuracy:
    """One deployed split's test accuracy in a run, from its deploy cell (no attack needed)."""

    cut: str
    cut_index: int
    defense: str
    strength: float
    accuracy: float


class _Split(Protocol):
    """What both kinds of run give per deployed split: a FrontierPoint or a DeployedAccuracy."""

    @property
    def cut(self) -> str: ...
    @property
    def cut_index(self) -> int: ...
    @property
    def defense(self) -> str: ...
    @property
    def strength(self) -> float: ...
    @property
    def accuracy(self) -> float: ...


_S = TypeVar("_S", bound=_Split)


def seed_spread(runs: Sequence[Sequence[ResultRow]]) -> list[SplitSpread]:
    """Summarise the rows of several runs of one spec, one run per seed, per deployed split.

    Every run must hold a single seed, and no two runs the same one (a spread over one seed counted
    twice would look tighter than it is). A split missing from some runs is summarised over the
    seeds that have it, and its ``seeds`` say which.
    """
    points_by_seed = {seed: frontier_points(rows) for seed, rows in _runs_by_seed(runs).items()}
    return _ordered(_summarise(seeded) for seeded in _by_split(points_by_seed))


def accuracy_spread(runs: Sequence[tuple[int, Sequence[DeployedAccuracy]]]) -> list[SplitSpread]:
    """Summarise the test accuracy of runs without attacks, ``(seed, deployed splits)`` per run, per split;
    the same rules as :func:`seed_spread` (distinct seeds, a split summarised over the seeds that have it)."""
    by_seed: dict[int, Sequence[DeployedAccuracy]] = {}
    for index, (seed, deployed) in enumerate(runs):
        if not deployed:
            raise ConfigError(f"run {index + 1} has no finished deploy cell; finish it with `splitveil bench run`")
        _refuse_repeated_seed(seed, by_seed)
        by_seed[seed] = deployed
    return _ordered(_summarise(seeded) for seeded in _by_split(by_seed))


def deployed_accuracies(directory: Path) -> tuple[int, list[DeployedAccuracy]]:
    """The seed of the run in ``directory`` and the accuracy of each split its deploy cells finished."""
    from splitveil.bench.status import cells_of_run, run_spec
    from splitveil.bench.store import ResultStore

    spec = run_spec(directory)
    with ResultStore(directory) as store:
        stored = store.cells()
    train = stored.get(TRAIN_ID)
    order = TrainResult.model_validate(train.result).cut_order if train and train.result else []
    deployed = []
    for cell in cells_of_run(spec, stored):
        entry = stored.get(cell.id)
        if cell.kind != "deploy" or entry is None or entry.status != "done" or entry.result is None:
            continue
        cut = str(cell.cut)  # a deploy cell names its cut
        depth = order.index(cut) if cut in order else 0
        accuracy = DeployResult.model_validate(entry.result).accuracy
        deployed.append(DeployedAccuracy(cut, depth, cell.defense, cell.strength, accuracy))
    return spec.seed, deployed


def _by_split(by_seed: Mapping[int, Sequence[_S]]) -> list[list[tuple[int, _S]]]:
    """The splits of every run, each with the seeds (and their figures) that deployed it."""
    splits: dict[tuple[str, str, float], list[tuple[int, _S]]] = {}
    for seed, points in by_seed.items():
        for point in points:
            splits.setdefault((point.cut, point.defense, point.strength), []).append((seed, point))
    return list(splits.values())


def _ordered(summaries: Iterable[SplitSpread]) -> list[SplitSpread]:
    """By depth, the undefended split first within a cut."""
    return sorted(summaries, key=lambda s: (s.cut_index, s.defense != "none", s.defense, s.strength))


def _refuse_repeated_seed(seed: int, seen: Collection[int]) -> None:
    if seed in seen:
        raise ConfigError(f"two runs have seed {seed}; run the spec with a different seed for each directory")


def _runs_by_seed(runs: Sequence[Sequence[ResultRow]]) -> dict[int, Sequence[ResultRow]]:
    by_seed: dict[int, Sequence[ResultRow]] = {}
    for index, rows in enumerate(runs):
        seeds = {row.seed for row in rows}
        if not seeds:  # rows are attacked splits: a run of a spec with `attacks: []` has none, finished or not
            raise ConfigError(
                f"run {index + 1} holds no attack rows; give one finished run directory per seed, all of a spec "
                "with attacks, or all of one without (then the spread is of accuracy alone)"
            )
        if len(seeds) != 1:
            raise ConfigError(f"run {index + 1} holds seeds {sorted(seeds)}; give one run directory per seed")
        (seed,) = seeds
        _refuse_repeated_seed(seed, by_seed)
        by_seed[seed] = rows
    return by_seed


def _summarise(seeded: list[tuple[int, _S]]) -> SplitSpread:
    """One split over its seeds: accuracy always, leakage where its runs attacked it (FrontierPoints)."""
    points = [point for _, point in seeded]
    first = points[0]
    attacked = [point for point in points if isinstance(point, FrontierPoint)]
    return SplitSpread(
        cut=first.cut,
        cut_index=first.cut_index,
        defense=first.defense,
        strength=first.strength,
        seeds=tuple(sorted(seed for seed, _ in seeded)),
        accuracy=Spread.of([p.accuracy for p in points]),
        max_ssim=_measured(attacked, lambda p: p.max_ssim),
        excess_ssim=_measured(attacked, lambda p: p.excess_ssim),
        reid_top1=_measured(attacked, lambda p: p.reid_top1),
        seeds_at_floor=sum(at_floor(p) for p in attacked) if attacked else None,
    )


def _measured(points: Sequence[FrontierPoint], figure: Callable[[FrontierPoint], float | None]) -> Spread | None:
    values = [value for value in map(figure, points) if value is not None]
    return Spread.of(values) if values else None


def spread_table(spreads: Sequence[SplitSpread]) -> tuple[list[str], list[list[str]]]:
    """Header and lines for :func:`~splitveil.bench.tables.as_markdown` or a rich table: each figure as
    ``mean [lowest, highest]`` over the split's seeds; accuracy in percent to two decimals (one test
    image in 10,000), since defenses at the accuracy end differ by tenths of a point."""
    header = ["cut", "defense", "strength", "seeds", "accuracy", "max SSIM", "excess SSIM", "reid top-1", "at floor"]
    lines = [
        [
            s.cut,
            s.defense,
            f"{s.strength:g}",
            ",".join(map(str, s.seeds)),
            f"{100 * s.accuracy.mean:.2f}% [{100 * s.accuracy.low:.2f}, {100 * s.accuracy.high:.2f}]",
            _or_dash(s.max_ssim),
            _or_dash(s.excess_ssim),
            _or_dash(s.reid_top1),
            "—" if s.seeds_at_floor is None else f"{s.seeds_at_floor}/{len(s.seeds)}",
        ]
        for s in spreads
    ]
    return header, lines


def _or_dash(spread: Spread | None) -> str:
    return "—" if spread is None else str(spread)
