"""Choosing a deployment: rank the Pareto points by privacy, recommend one in plain words.

Privacy first, within the budget: the lowest top-1 re-identification of the strongest attack, then
the lowest excess SSIM over the output oracle (compared at the three decimals the tables show), then
the higher accuracy. When the Pareto points were re-measured, their verified figures (the strongest
over the fresh attacker seeds) decide; the search's own figures only rank what to re-measure.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitveil.bench.verdict import leakage_clause
from splitveil.errors import SplitveilError
from splitveil.tune.study import Measured
from splitveil.tune.verify import Verified


def privacy_rank(reid_top1: float | None, excess_ssim: float | None, max_ssim: float, accuracy: float) -> tuple:
    """Sort key: lower is more private; an unmeasured measure counts as the worst."""
    worst = float("inf")
    return (
        round(worst if reid_top1 is None else reid_top1, 3),
        round(worst if excess_ssim is None else excess_ssim, 3),
        round(max_ssim, 3),
        -accuracy,
    )


def rank_measured(trials: Sequence[Measured]) -> list[Measured]:
    """``trials`` most private first, by the search's figures."""
    return sorted(
        trials,
        key=lambda t: privacy_rank(t.figures.reid_top1, t.figures.excess_ssim, t.figures.max_ssim, t.figures.accuracy),
    )


def rank_verified(points: Sequence[Verified]) -> list[Verified]:
    """``points`` most private first, by their verified figures (the strongest over the seeds)."""

    def key(point: Verified) -> tuple:
        max_ssim = point.strongest("max_ssim")
        return privacy_rank(
            point.strongest("reid_top1"),
            point.strongest("excess_ssim"),
            float("inf") if max_ssim is None else max_ssim,
            point.accuracy,
        )

    return sorted((point for point in points if point.complete), key=key)


def no_feasible_trial(trials: Sequence[Measured], *, max_drop: float, base_accuracy: float) -> SplitveilError:
    """The one-line error of a study in which no trial met the budget, naming the closest trial."""
    if not trials:
        return SplitveilError("no trial finished; `splitveil bench status OUT` lists the cells' errors")
    closest = min(trials, key=lambda t: (t.accuracy_drop, t.number))
    figures = closest.figures
    return SplitveilError(
        f"no trial met the budget (accuracy within {max_drop:g} points of the undefended {base_accuracy:.2%}, and "
        f"the device limits): the closest is trial {closest.number}, {closest.point.cut} "
        f"{closest.point.describe()} at {figures.accuracy:.2%} ({-closest.accuracy_drop:+.2f} points, "
        f"{figures.edge_flops:,} edge FLOPs, {figures.feature_bytes:,} bytes); raise tune.budget, search weaker "
        "strengths, or run more trials"
    )


def recommendation(model: str, chosen: Verified, *, base_accuracy: float, attacks: Sequence[str]) -> str:
    """The chosen deployment and what the cloud can still learn, in plain words; ``attacks`` re-measured it."""
    point, figures = chosen.trial.point, chosen.trial.figures
    seeds = len(chosen.by_seed)
    cost = (
        f"Cut {model} at {point.cut} and deploy {point.describe()}: {figures.accuracy:.2%} test accuracy "
        f"({100 * (base_accuracy - figures.accuracy):.2f} points below the undefended {base_accuracy:.2%}), "
        f"{figures.edge_flops / 1e6:.2f} MFLOPs on the device and {figures.feature_bytes:,} bytes sent per image."
    )
    # One seed's figures, so that they add up (excess = SSIM - oracle): the seed that leaks the most.
    worst = max(chosen.by_seed.values(), key=lambda f: privacy_rank(f.reid_top1, f.excess_ssim, f.max_ssim, 0.0)[:3])
    suite = f"{len(attacks)} attacks ({', '.join(attacks)})"
    at_seeds = (
        f"{seeds} fresh attacker seeds; at the one that learned the most" if seeds > 1 else "a fresh attacker seed"
    )
    return f"{cost} Re-measured by {suite} at {at_seeds}, {leakage_clause(worst)}"
