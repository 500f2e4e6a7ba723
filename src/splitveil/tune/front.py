"""Pareto dominance over measured deployments: which trials and baselines make the front.

The front is computed here rather than read from Optuna's ``best_trials`` because it also holds
the baselines, which are measured beside the study and are not its trials. For trials alone the two
agree (tested): within budget, and dominated by no other point within budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitveil.tune.spec import Objective
from splitveil.tune.study import DIRECTIONS, Measured, objective_value


def _oriented(entry: Measured, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The objectives as values where higher is better (an unmeasured one counts as the worst)."""
    values = []
    for objective in objectives:
        value = objective_value(entry.figures, objective)
        if value is None:
            values.append(float("-inf"))
        else:
            values.append(value if DIRECTIONS[objective] == "maximize" else -value)
    return tuple(values)


def at_least_as_good(a: Measured, b: Measured, objectives: Sequence[Objective]) -> bool:
    """Whether ``a`` is as good as ``b`` or better on every objective (it dominates or equals it)."""
    return all(x >= y for x, y in zip(_oriented(a, objectives), _oriented(b, objectives), strict=True))


def dominates(a: Measured, b: Measured, objectives: Sequence[Objective]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    return at_least_as_good(a, b, objectives) and _oriented(a, objectives) != _oriented(b, objectives)


def pareto_front(entries: Sequence[Measured], objectives: Sequence[Objective]) -> list[Measured]:
    """The entries within budget that no other entry within budget dominates, in their order."""
    feasible = [entry for entry in entries if entry.feasible]
    return [entry for entry in feasible if not any(dominates(other, entry, objectives) for other in feasible)]
