"""Baselines: the deployments the user already knows, measured beside the study on equal terms.

A study of a few dozen trials can miss what a hand-tuned grid found, by a tenth of a point or by
luck of the training draw. So ``tune.baselines`` (a bench spec's ``defenses`` list) are deployed at
every searched cut and attacked by the same guiding attackers as the trials, in the same run
directory. They join the Pareto front and may be re-measured and recommended like any trial; the
report says which of them a searched trial dominates or equals, and which only the baseline itself
covers. They are not the study's trials: the sampler does not learn from them, and adding some to a
finished study measures them without touching its trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitveil.bench.run import run_cell_batch
from splitveil.tune.front import at_least_as_good
from splitveil.tune.space import Point
from splitveil.tune.spec import Objective, TuneSpec
from splitveil.tune.study import Measured, Search, cells_of, constraints, first_error, measure, point_key, within_budget

#: The candidate name of a baseline's point (a trial's names its ``tune.candidates`` entry).
BASELINE = "baseline"


def baseline_points(spec: TuneSpec) -> list[Point]:
    """Every strength of every baseline at every cut the study may choose, in the spec's order."""
    return [
        Point(cut=cut, candidate=BASELINE, defense=baseline.model_copy(update={"strengths": [strength]}))
        for cut in spec.search_cuts
        for baseline in spec.tune.baselines
        for strength in baseline.strengths
    ]


def measure_baselines(search: Search) -> list[Measured]:
    """Deploy and attack the spec's baselines (the store skips finished cells), in the spec's order.

    A baseline whose cells failed is reported and left out: a point scored without its strongest
    attack would look more private than it is.
    """
    points = baseline_points(search.spec)
    if not points:
        return []
    run_cell_batch(
        search.experiment, cells_of(search.experiment, points), search.out, store=search.store,
        runner=search.runner, cache=search.cache, progress=search.progress,
    )  # fmt: skip
    figures = measure(search, points)
    measured = []
    for number, point in enumerate(points):
        error = first_error(search.store, search.experiment, point)
        found = figures.get(point_key(point))
        if error is not None or found is None:
            search.report(f"baseline {number}: {point.cut} {point.describe()} failed: {error or 'no result'}")
            continue
        feasible = within_budget(constraints(search, found).values())
        measured.append(Measured(number, point, found, search.accuracy_drop(found), feasible, baseline=True))
    return measured


def covering_trials(baseline: Measured, trials: Sequence[Measured], objectives: Sequence[Objective]) -> list[Measured]:
    """The feasible searched trials that dominate or equal ``baseline`` on every objective."""
    return [trial for trial in trials if trial.feasible and at_least_as_good(trial, baseline, objectives)]


@dataclass(frozen=True)
class BaselineVerdict:
    """A measured baseline and how the study did against it."""

    baseline: Measured
    on_front: bool
    #: The searched trials within budget that dominate or equal it on every objective.
    covered_by: tuple[int, ...]

    def describe(self) -> str:
        """One clause: who covers this baseline (``dominated or equalled by trial 2``, ``over budget``, ...)."""
        if self.covered_by:
            trials = ", ".join(str(number) for number in self.covered_by[:3])
            more = f" and {len(self.covered_by) - 3} more" if len(self.covered_by) > 3 else ""
            return f"dominated or equalled by trial{'s' if len(self.covered_by) > 1 else ''} {trials}{more}"
        if not self.baseline.feasible:
            return "over budget"
        if self.on_front:
            return "on the front: no trial dominates or equals it"
        return "dominated by another baseline: no trial dominates or equals it"


def judge_baselines(
    baselines: Sequence[Measured],
    trials: Sequence[Measured],
    front: Sequence[Measured],
    objectives: Sequence[Objective],
) -> list[BaselineVerdict]:
    """For each baseline: whether it made the front, and which searched trials dominate or equal it."""
    on_front = {entry.number for entry in front if entry.baseline}
    return [
        BaselineVerdict(
            baseline,
            baseline.number in on_front,
            tuple(trial.number for trial in covering_trials(baseline, trials, objectives)),
        )
        for baseline in baselines
    ]
