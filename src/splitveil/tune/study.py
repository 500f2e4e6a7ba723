"""The search: an Optuna study whose trials are deployed and attacked as bench cells.

The run directory is a bench run directory (its SQLite store holds every trial's cells, so the
bench's status, report and ``results.jsonl`` work on it) plus the study's own SQLite storage,
``study.db``, kept by the search engine shared with the PrivyNet planner (:mod:`splitveil.tune.engine`).
Each round asks for up to ``parallel`` trials, expands them into deploy and attack cells and runs
those on the executor (the local pool or Ray), then tells the study each trial's objectives and
constraints. A killed run leaves finished trials in ``study.db`` and finished cells in the store:
the next run counts the former, gives each interrupted trial's parameters to a new trial, and the
store skips whatever cells that trial had finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from splitveil.bench.cells import Cell, check_unique, split_cells, train_cells
from splitveil.bench.executors import Executor
from splitveil.bench.export import assemble_rows
from splitveil.bench.frontier import FrontierPoint, frontier_points
from splitveil.bench.run import run_cell_batch
from splitveil.bench.store import ResultStore, error_headline
from splitveil.checkpoint import CheckpointCache, config_hash
from splitveil.config import DefenseSpec, ExperimentSpec
from splitveil.errors import ConfigError
from splitveil.tune import engine
from splitveil.tune.space import Placement, Point, sample_point
from splitveil.tune.spec import Objective, TuneSpec

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "tune"
DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    "accuracy": "maximize",
    "reid_top1": "minimize",
    "excess_ssim": "minimize",
    "max_ssim": "minimize",
}


@dataclass(frozen=True)
class Measured:
    """A finished trial: its point and the figures its strongest attack and deploy cell gave."""

    number: int
    point: Point
    figures: FrontierPoint
    accuracy_drop: float  # points below the undefended model
    feasible: bool
    #: A baseline is a deployment the spec names (``tune.baselines``), measured beside the study: its
    #: ``number`` counts the baselines, not the trials.
    baseline: bool = False

    @property
    def name(self) -> str:
        """``trial 3`` or ``baseline 1``: how tables and messages refer to it."""
        return f"{'baseline' if self.baseline else 'trial'} {self.number}"


@dataclass
class Search:
    """What the study needs from the run: its spec, directory, store, executor and the base accuracy."""

    spec: TuneSpec
    experiment: ExperimentSpec
    out: Path
    store: ResultStore
    runner: Executor
    cache: CheckpointCache
    base_accuracy: float
    progress: bool = True
    report: Callable[[str], object] = print

    def accuracy_drop(self, figures: FrontierPoint) -> float:
        """Points of test accuracy ``figures`` lose against the undefended model."""
        return 100 * (self.base_accuracy - figures.accuracy)


def refuse_another_search(spec: TuneSpec, out: Path) -> None:
    """Refuse ``out`` when it holds a study of another search; reads only, so call it before writing there."""
    engine.refuse_another_search(
        out,
        name=STUDY_NAME,
        identity=search_identity(spec),
        advice="run this spec with a new --out directory (only tune.trials, parallel, verify and baselines may change)",
    )


def open_study(spec: TuneSpec, out: Path) -> optuna.Study:
    """The study in ``out/study.db``, created or resumed (:func:`refuse_another_search` has checked it)."""
    import optuna

    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }
    sampler = samplers[spec.tune.sampler]
    return engine.open_study(
        out,
        name=STUDY_NAME,
        directions=[DIRECTIONS[objective] for objective in spec.tune.objectives],
        identity=search_identity(spec),
        sampler=lambda seed: sampler(seed=seed),
        seed=spec.seed,
    )


def search_identity(spec: TuneSpec) -> str:
    """A hash of everything that shapes a trial's result: changing it makes the stored trials another study's."""
    settings = spec.model_dump(mode="json")
    settings["tune"] = {
        key: value
        for key, value in settings["tune"].items()
        if key not in {"trials", "parallel", "verify", "baselines"}  # none of these changes what a trial measures
    }
    return config_hash(settings)


def run_search(search: Search, study: optuna.Study, fits: list[Placement], *, trials: int, parallel: int) -> None:
    """Run trials until ``trials`` count (finished ones count; :func:`completed_points` lists them after)."""

    def sample(trial: optuna.Trial) -> Point:
        point = sample_point(trial, fits)
        trial.set_user_attr("cut", point.cut)
        trial.set_user_attr("defense", point.defense.model_dump(mode="json"))
        return point

    def evaluate(batch: list[tuple[optuna.Trial, Point]]) -> None:
        points = [point for _, point in batch]
        run_cell_batch(
            search.experiment, cells_of(search.experiment, points), search.out, store=search.store,
            runner=search.runner, cache=search.cache, progress=search.progress,
        )  # fmt: skip
        measured = measure(search, points)
        for trial, point in batch:
            _tell(search, study, trial, point, measured)

    def refused(trial: optuna.Trial, exc: ConfigError) -> None:
        search.report(f"trial {trial.number}: sampled settings refused: {exc}")

    engine.run_trials(study, trials=trials, parallel=parallel, sample=sample, evaluate=evaluate, refused=refused)


def completed_points(study: optuna.Study) -> list[Point]:
    """The points of every finished trial, rebuilt from what the study recorded."""
    from optuna.trial import TrialState

    return [trial_point(trial) for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def trial_point(trial: optuna.trial.FrozenTrial) -> Point:
    defense = DefenseSpec.model_validate(trial.user_attrs["defense"])
    candidate = str(trial.params["placement"]).split("/", 1)[1]
    return Point(cut=str(trial.user_attrs["cut"]), candidate=candidate, defense=defense)


def measured_trials(study: optuna.Study, search: Search) -> list[Measured]:
    """Every finished trial with its figures (read back from the run's store)."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = [trial_point(trial) for trial in finished]
    figures = measure(search, points)
    return [
        Measured(
            trial.number,
            point,
            figures[point_key(point)],
            float(trial.user_attrs["accuracy_drop"]),
            within_budget(trial.constraints.values()),
        )
        for trial, point in zip(finished, points, strict=True)
        if point_key(point) in figures
    ]


def objective_value(figures: FrontierPoint, objective: Objective) -> float | None:
    """``objective`` of a trial's figures (accuracy, or its strongest attack's measure)."""
    return {
        "accuracy": figures.accuracy,
        "reid_top1": figures.reid_top1,
        "excess_ssim": figures.excess_ssim,
        "max_ssim": figures.max_ssim,
    }[objective]


def constraints(search: Search, figures: FrontierPoint) -> dict[str, float]:
    """Each budget as a value that is <= 0 when met (Optuna's convention), normalised by its limit."""
    budget = search.spec.tune.budget
    drop = search.accuracy_drop(figures)
    values = {"accuracy_drop": drop - budget.max_accuracy_drop}
    if budget.max_edge_flops:
        values["edge_flops"] = figures.edge_flops / budget.max_edge_flops - 1
    if budget.max_feature_bytes:
        values["feature_bytes"] = figures.feature_bytes / budget.max_feature_bytes - 1
    return values


def _tell(search: Search, study: optuna.Study, trial: optuna.Trial, point: Point, measured: dict) -> None:
    figures = measured.get(point_key(point))
    # Any failed cell fails the trial: a point whose strongest attack failed would be scored by a weaker one.
    error = first_error(search.store, search.experiment, point)
    if error is None and figures is None:
        error = "its cells gave no result"
    measures = [] if figures is None else [objective_value(figures, name) for name in search.spec.tune.objectives]
    if error is None and not all(value is not None and math.isfinite(value) for value in measures):
        error = f"a measure of the objectives was not computed or not finite: {measures}"
    if error is not None or figures is None:
        _fail(
            search,
            study,
            trial,
            error or "no result",
            f"trial {trial.number}: {point.cut} {point.describe()} failed: {error}",
        )
        return
    values = [float(value) for value in measures if value is not None]
    limits = constraints(search, figures)
    for name, value in limits.items():
        trial.set_constraint(name, value)
    drop = search.accuracy_drop(figures)
    trial.set_user_attr("accuracy_drop", drop)
    study.tell(trial, values)
    verdict = "within budget" if within_budget(limits.values()) else "over budget"
    search.report(
        f"trial {trial.number}: {point.cut} {point.describe()}: accuracy {figures.accuracy:.2%} "
        f"({100 * (figures.accuracy - search.base_accuracy):+.2f} pts), "
        f"strongest SSIM {figures.max_ssim:.3f}, excess {_fmt(figures.excess_ssim)}, reid {_fmt(figures.reid_top1)} ({verdict})"
    )


def _fail(search: Search, study: optuna.Study, trial: optuna.Trial, error: str, line: str) -> None:
    engine.fail_trial(study, trial, error)
    search.report(line)


def within_budget(values: Any) -> bool:
    """Whether every constraint value (Optuna's convention: <= 0 when met) is met."""
    return all(value <= 0 for value in (values or ()))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if value < 0 else f"{value:.3f}"


def point_key(point: Point) -> tuple[str, str, float]:
    """What identifies a point's split among the rows: its cut, label and strength."""
    return (point.cut, point.label, point.strength)


def cells_of(experiment: ExperimentSpec, points: list[Point]) -> list[Cell]:
    """The cells of ``points`` (each split once, however many trials sampled it), after the shared ones:
    the model's, the evaluator's and the undefended split at each of the points' cuts (the reference
    every figure of the report is read against)."""
    from splitveil.bench.cells import needs_evaluator

    cells = {cell.id: cell for cell in train_cells(experiment)}
    scored = needs_evaluator(experiment)
    splits: list[tuple[str, str, DefenseSpec | None, float]]
    splits = [(cut, "none", None, 0.0) for cut in dict.fromkeys(point.cut for point in points)]
    splits += [(point.cut, point.label, point.defense, point.strength) for point in points]
    for cut, label, defense, strength in splits:
        for cell in split_cells(experiment, cut, label, defense, strength, evaluator_needed=scored):
            cells.setdefault(cell.id, cell)
    ordered = list(cells.values())
    check_unique(ordered)
    return ordered


def measure(search: Search, points: list[Point]) -> dict[tuple[str, str, float], FrontierPoint]:
    """The figures of ``points`` whose cells are in the run's store, by :func:`point_key`."""
    rows = assemble_rows(search.experiment, cells_of(search.experiment, points), search.store.cells())
    return {(p.cut, p.defense, p.strength): p for p in frontier_points(rows)}


def first_error(store: ResultStore, experiment: ExperimentSpec, point: Point) -> str | None:
    """The first failed cell of ``point`` in ``store`` and its error's headline, or None."""
    stored = store.cells()
    for cell in cells_of(experiment, [point]):
        entry = stored.get(cell.id)
        if entry is not None and entry.status == "failed" and entry.error:
            return f"{cell.id}: {error_headline(entry.error)}"
    return None
