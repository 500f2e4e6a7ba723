"""``splitveil tune``: from a search space to a deployment, re-measured and ready to serve.

1. The target model is trained (or found in the cache) as the bench's train cell.
2. Each (cut, candidate) is costed; those over the device budget are left out of the search (none
   left: a one-line error naming the closest).
3. The study runs (:mod:`splitveil.tune.study`): each trial deployed, trained and attacked by the
   spec's cheap attackers, on the local pool or Ray, stored as it finishes.
4. The spec's baselines (``tune.baselines``) are deployed and attacked by the same attackers
   (:mod:`splitveil.tune.baselines`) and join the trials on the Pareto front.
5. The Pareto points within budget, most private first, are re-measured by the full suite with
   fresh attacker seeds (:mod:`splitveil.tune.verify`).
6. The most private re-measured point within the accuracy budget is recommended in plain words,
   written up (``tune.json``, ``tune.html``, ``pareto.png``), and with ``export`` written as a
   serving bundle that ``splitveil serve`` runs as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from splitveil.bench.cells import train_cells
from splitveil.bench.executors import create_executor
from splitveil.bench.run import export_run, raise_if_failed, run_cell_batch
from splitveil.bench.store import ResultStore, run_lock
from splitveil.checkpoint import CheckpointCache
from splitveil.config import write_resolved
from splitveil.data import load_dataset
from splitveil.experiment import check_cuts, train_or_load
from splitveil.tune.baselines import BaselineVerdict, baseline_points, judge_baselines, measure_baselines
from splitveil.tune.engine import requeue_interrupted
from splitveil.tune.front import pareto_front
from splitveil.tune.recommend import no_feasible_trial, rank_measured, rank_verified, recommendation
from splitveil.tune.report import StudyOutcome, write_outcome
from splitveil.tune.space import affordable, placements
from splitveil.tune.spec import TuneSpec
from splitveil.tune.study import (
    Measured,
    Search,
    cells_of,
    completed_points,
    measured_trials,
    open_study,
    point_key,
    refuse_another_search,
    run_search,
)
from splitveil.tune.verify import VERIFY_DIR, Verified, verify_points

TUNED_SPEC = "tuned-spec.yaml"


@dataclass(frozen=True)
class TuneResult:
    outcome: StudyOutcome
    page: Path


def run_tune(
    spec: TuneSpec,
    out: str | Path,
    *,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    executor: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    export: str | Path | None = None,
    verify: bool = True,
    report: Callable[[str], object] = print,
) -> TuneResult:
    """Run (or resume) the study of ``spec`` in ``out``; see the module docstring for the steps."""
    out, cache = Path(out), cache or CheckpointCache.default()
    experiment = spec.experiment()
    data = load_dataset(experiment.data.name, seed=experiment.seed, **experiment.data.loader_options())
    check_cuts(experiment, data, spec.search_cuts)  # a bad cut fails before any work
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out), ResultStore(out) as store:
        refuse_another_search(spec, out)  # before anything is written over the other study's files
        write_resolved(experiment, out)
        (out / "tune.resolved.yaml").write_text(spec.to_yaml())
        runner = create_executor(executor, workers=workers, threads=threads, address=address)
        finished = False
        try:
            shared = train_cells(experiment)
            raise_if_failed(
                run_cell_batch(experiment, shared, out, store=store, runner=runner, cache=cache, progress=progress), out
            )
            trained = train_or_load(experiment, cache=cache, data=data, progress=False, cached_only=True)
            fits = affordable(spec, placements(spec, trained.model, data.input_shape))
            study = open_study(spec, out)  # after the budget check: a budget fixed in place is not recorded yet
            search = Search(spec, experiment, out, store, runner, cache, trained.test_accuracy, progress, report)
            if resumed := requeue_interrupted(study):
                report(f"resuming: {resumed} interrupted trial(s) run again with the same parameters")
            parallel = spec.tune.parallel or runner.slots
            run_search(search, study, fits, trials=spec.tune.trials, parallel=parallel)
            baselines = measure_baselines(search)
            export_run(experiment, cells_of(experiment, completed_points(study) + baseline_points(spec)), store, out)
            trials = measured_trials(study, search)
            feasible = [entry for entry in [*trials, *baselines] if entry.feasible]
            front = pareto_front(feasible, spec.tune.objectives)
            verdicts = judge_baselines(baselines, trials, front, spec.tune.objectives)
            for verdict in verdicts:
                report(_baseline_line(verdict))
            verified: list[Verified] = []
            if verify and front:
                chosen = _distinct(rank_measured(front))[: spec.tune.verify.points]
                verified = verify_points(spec, chosen, out, runner=runner, cache=cache, progress=progress)
            finished = True
        finally:
            runner.shutdown(wait=finished)
    base = trained.test_accuracy
    ranked = rank_verified(verified)  # Pareto points are feasible: each keeps the accuracy budget
    chosen_point = ranked[0] if ranked else None
    sentence = None
    if chosen_point is not None:
        suite = [attack.name for attack in spec.tune.verify.attacks]
        sentence = recommendation(spec.model.name, chosen_point, base_accuracy=base, attacks=suite)
    outcome = StudyOutcome(
        spec.model.name,
        base,
        spec.tune.budget.max_accuracy_drop,
        trials,
        [entry.number for entry in front if not entry.baseline],
        verified,
        chosen_point,
        sentence,
        no_recommendation=None if sentence else _why_no_recommendation(verify, feasible, verified, out),
        baselines=verdicts,
    )
    exported = None
    try:
        if chosen_point is not None and export is not None:
            exported = str(export_chosen(spec, chosen_point, Path(export), cache=cache, progress=progress))
    finally:  # a failed export still leaves the study's report
        outcome = replace(outcome, export=exported)
        page = write_outcome(out, outcome)
    if not feasible:
        raise no_feasible_trial(trials, max_drop=spec.tune.budget.max_accuracy_drop, base_accuracy=base)
    return TuneResult(outcome, page)


def _distinct(trials: list[Measured]) -> list[Measured]:
    """``trials`` without repeats of a point another trial already measured (a sampler may draw one twice)."""
    seen: set[tuple[str, str, float]] = set()
    kept = []
    for trial in trials:
        key = point_key(trial.point)
        if key not in seen:
            seen.add(key)
            kept.append(trial)
    return kept


def _why_no_recommendation(verify: bool, feasible: list[Measured], verified: list[Verified], out: Path) -> str:
    if not feasible:
        return "No trial met the budget; the table shows every trial, and the closest is named on the command line."
    if not verify:
        return "The Pareto points were not re-measured (--no-verify), so none is recommended."
    return (  # verified, yet no point has figures: their cells failed at every seed
        f"The re-measurement of the Pareto points did not complete: `splitveil bench status "
        f"{out / VERIFY_DIR}/seed-N` lists the failed cells; run the same command again to finish it."
    )


def _baseline_line(verdict: BaselineVerdict) -> str:
    baseline = verdict.baseline
    figures = baseline.figures
    reid = "n/a" if figures.reid_top1 is None else f"{figures.reid_top1:.3f}"
    return (
        f"{baseline.name}: {baseline.point.cut} {baseline.point.describe()}: accuracy {figures.accuracy:.2%} "
        f"({-baseline.accuracy_drop:+.2f} pts), strongest SSIM {figures.max_ssim:.3f}, reid {reid}; {verdict.describe()}"
    )


def export_chosen(spec: TuneSpec, chosen: Verified, directory: Path, *, cache: CheckpointCache, progress: bool) -> Path:
    """The chosen point as a serving bundle in ``directory``, with the spec that reproduces it beside it."""
    from splitveil.serve.deployment import deployment_from_spec

    point = chosen.trial.point
    tuned = spec.experiment(cuts=[point.cut], defenses=[point.defense.model_dump(mode="json")])
    deployment = deployment_from_spec(
        tuned, point.cut, defense=point.label, strength=point.strength, cache=cache, progress=progress
    )
    deployment.export(directory)
    (directory / TUNED_SPEC).write_text(tuned.to_yaml())
    return directory
