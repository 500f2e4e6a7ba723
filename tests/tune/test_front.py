"""The Pareto front over trials and baselines, checked against Optuna's own front and by hand."""

import random

import optuna
import pytest

from splitveil.tune.baselines import judge_baselines
from splitveil.tune.front import at_least_as_good, dominates, pareto_front
from splitveil.tune.study import DIRECTIONS

from .conftest import make_measured

OBJECTIVES = ["accuracy", "reid_top1", "excess_ssim"]


def _entry(number, accuracy, reid, excess, *, feasible=True, baseline=False):
    return make_measured(number, accuracy, reid, excess, feasible=feasible, baseline=baseline)


@pytest.mark.parametrize("seed", range(5))
def test_the_front_of_trials_is_optunas_front(seed):
    """Independent reference: Optuna's ``best_trials`` on the same values and constraints (ties included)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draw = random.Random(seed)
    entries = [_entry(0, 0.99, 0.0, 0.0, feasible=False)]  # better than all, over budget: it must not hide them
    entries += [  # coarse grids, so that ties occur
        _entry(
            n,
            draw.choice([0.8, 0.84, 0.88, 0.9, 0.91]),
            draw.choice([0.2, 0.5, 0.8, 1.0]),
            draw.choice([0.1, 0.2, 0.3]),
            feasible=draw.random() > 0.2,
        )  # fmt: skip
        for n in range(1, 40)
    ]
    study = optuna.create_study(directions=[DIRECTIONS[o] for o in OBJECTIVES])
    for entry in entries:
        figures = entry.figures
        study.add_trial(
            optuna.trial.create_trial(
                values=[figures.accuracy, figures.reid_top1, figures.excess_ssim],
                constraints={"accuracy_drop": -1.0 if entry.feasible else 1.0},
            )
        )
    front = sorted(e.number for e in pareto_front(entries, OBJECTIVES))
    assert front == sorted(t.number for t in study.best_trials)
    assert front and 0 not in front


def test_equal_points_are_both_on_the_front_and_neither_dominates():
    a, b = _entry(0, 0.9, 1.0, 0.3), _entry(1, 0.9, 1.0, 0.3, baseline=True)
    assert at_least_as_good(a, b, OBJECTIVES) and at_least_as_good(b, a, OBJECTIVES)
    assert not dominates(a, b, OBJECTIVES) and pareto_front([a, b], OBJECTIVES) == [a, b]


def test_an_unmeasured_objective_counts_as_the_worst():
    unmeasured = _entry(0, 0.95, None, 0.0)
    assert dominates(_entry(1, 0.95, 1.0, 0.0), unmeasured, OBJECTIVES)


def test_a_baseline_is_judged_against_the_searched_trials_within_budget():
    trials = [_entry(0, 0.91, 1.0, 0.38), _entry(1, 0.90, 0.8, 0.25), _entry(2, 0.95, 0.1, 0.0, feasible=False)]
    baselines = [
        _entry(0, 0.905, 1.0, 0.40, baseline=True),  # trial 0 is ahead on all three
        _entry(1, 0.911, 1.0, 0.34, baseline=True),  # more accurate than any trial: only itself
        _entry(2, 0.911, 1.0, 0.35, baseline=True),  # dominated by baseline 1 alone
    ]
    front = pareto_front(trials + baselines, OBJECTIVES)
    verdicts = judge_baselines(baselines, trials, front, OBJECTIVES)
    assert [v.covered_by for v in verdicts] == [(0,), (), ()]  # trial 2 is over budget: it covers nothing
    assert [v.on_front for v in verdicts] == [False, True, False]
    assert [v.describe() for v in verdicts] == [
        "dominated or equalled by trial 0",
        "on the front: no trial dominates or equals it",
        "dominated by another baseline: no trial dominates or equals it",
    ]
