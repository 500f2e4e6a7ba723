"""Re-measuring the Pareto points: the full attack suite, with fresh attacker seeds, on the same deployed splits.

The cheap attackers that guided the search may underrate a point, and one attacker seed may be a
lucky one. So each chosen point faces ``tune.verify.attacks`` once per seed in
``tune.verify.attack_seeds`` (``audit.attack_seed``: the deployed split, its checkpoint and the
attacker's data stay the same, the attackers' training changes). Each seed is a bench run directory
of its own under ``OUT/verify/``, with its results, report and reconstruction grids. A point's
verified figures are the strongest over the seeds; their spread says how much one attacker's luck
moves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splitveil.bench.executors import Executor
from splitveil.bench.frontier import FrontierPoint, frontier_points
from splitveil.bench.run import export_run, run_cell_batch
from splitveil.bench.store import ResultStore, run_lock
from splitveil.checkpoint import CheckpointCache
from splitveil.config import write_resolved
from splitveil.tune.spec import TuneSpec
from splitveil.tune.study import Measured, cells_of, first_error, point_key

VERIFY_DIR = "verify"


@dataclass(frozen=True)
class Verified:
    """A Pareto point: what the search measured, and the full suite's figures at each fresh attacker seed."""

    trial: Measured
    by_seed: dict[int, FrontierPoint]

    @property
    def complete(self) -> bool:
        return bool(self.by_seed)

    def strongest(self, measure: str) -> float | None:
        """The highest ``measure`` over the seeds (every measure here is leakage: higher is worse)."""
        values = [getattr(figures, measure) for figures in self.by_seed.values()]
        known = [value for value in values if value is not None]
        return max(known) if known else None

    def spread(self, measure: str) -> float | None:
        """How far ``measure`` moved between the seeds (max - min)."""
        values = [getattr(figures, measure) for figures in self.by_seed.values()]
        known = [value for value in values if value is not None]
        return max(known) - min(known) if len(known) > 1 else None

    @property
    def accuracy(self) -> float:
        return self.trial.figures.accuracy

    @property
    def strongest_attack(self) -> str:
        return max(self.by_seed.values(), key=lambda figures: figures.max_ssim).strongest_attack


def verify_points(
    spec: TuneSpec,
    chosen: list[Measured],
    out: Path,
    *,
    runner: Executor,
    cache: CheckpointCache,
    progress: bool = True,
) -> list[Verified]:
    """Attack every point of ``chosen`` with the full suite at each fresh seed; see the module docstring."""
    by_seed: dict[int, dict[tuple[str, str, float], FrontierPoint]] = {}
    points = [measured.point for measured in chosen]
    for seed in spec.tune.verify.attack_seeds:
        attacks = [attack.model_dump(mode="json") for attack in spec.tune.verify.attacks]
        audit = {**spec.audit.model_dump(mode="json"), "attack_seed": seed}
        if spec.tune.verify.targets is not None:
            audit["targets"] = spec.tune.verify.targets
        experiment = spec.experiment(attacks=attacks, audit=audit)
        directory = out / VERIFY_DIR / f"seed-{seed}"
        cells = cells_of(experiment, points)
        with run_lock(directory), ResultStore(directory) as store:
            write_resolved(experiment, directory)
            # verify's attacks may change between runs (they are not the search's): recompute what changed
            run_cell_batch(
                experiment, cells, directory, store=store, runner=runner, cache=cache, progress=progress,
                rerun_changed=True,
            )  # fmt: skip
            rows = export_run(experiment, cells, store, directory)
            # a seed at which one of a point's attacks failed does not count: a weaker one would score it
            failed = {point_key(point) for point in points if first_error(store, experiment, point) is not None}
        figures = {(p.cut, p.defense, p.strength): p for p in frontier_points(rows)}
        by_seed[seed] = {key: point for key, point in figures.items() if key not in failed}
    return [
        Verified(
            measured,
            {seed: figures[key] for seed, figures in by_seed.items() if (key := point_key(measured.point)) in figures},
        )
        for measured in chosen
    ]
