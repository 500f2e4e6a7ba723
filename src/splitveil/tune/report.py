"""What a study hands the user: ``tune.json`` (every trial, the Pareto points, the recommendation),
``pareto.png`` (accuracy against re-identification and excess SSIM) and ``tune.html``."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from splitveil.bench.figures import png_bytes
from splitveil.bench.verdict import AT_FLOOR_EXCESS
from splitveil.tune.baselines import BaselineVerdict
from splitveil.tune.study import Measured
from splitveil.tune.verify import Verified

TUNE_JSON = "tune.json"
TUNE_HTML = "tune.html"
PARETO_PNG = "pareto.png"


@dataclass(frozen=True)
class StudyOutcome:
    """Everything the report shows."""

    model: str
    base_accuracy: float
    max_accuracy_drop: float
    trials: Sequence[Measured]
    pareto: Sequence[int]  # trial numbers on the Pareto front (feasible)
    verified: Sequence[Verified]
    chosen: Verified | None
    recommendation: str | None
    export: str | None = None
    #: Why there is no recommendation, in a sentence (None when there is one).
    no_recommendation: str | None = None
    baselines: Sequence[BaselineVerdict] = ()


def trial_row(trial: Measured) -> dict[str, Any]:
    figures = trial.figures
    return {
        "trial": trial.number,
        "name": trial.name,
        "cut": trial.point.cut,
        "defense": trial.point.describe(),
        "label": trial.point.label,
        "accuracy": figures.accuracy,
        "accuracy_drop": trial.accuracy_drop,
        "max_ssim": figures.max_ssim,
        "strongest_attack": figures.strongest_attack,
        "oracle_ssim": figures.oracle_ssim,
        "excess_ssim": figures.excess_ssim,
        "reid_top1": figures.reid_top1,
        "reid_candidates": figures.reid_candidates,
        "edge_flops": figures.edge_flops,
        "feature_bytes": figures.feature_bytes,
        "feasible": trial.feasible,
    }


def verified_row(point: Verified) -> dict[str, Any]:
    measures = ("max_ssim", "excess_ssim", "reid_top1")
    return {
        "trial": point.trial.number,
        "name": point.trial.name,
        "cut": point.trial.point.cut,
        "defense": point.trial.point.describe(),
        "accuracy": point.accuracy,
        "search": {measure: getattr(point.trial.figures, measure) for measure in measures},
        "verified": {measure: point.strongest(measure) for measure in measures},
        "spread_over_seeds": {measure: point.spread(measure) for measure in measures},
        "by_seed": {str(seed): {m: getattr(f, m) for m in measures} for seed, f in point.by_seed.items()},
        "strongest_attack": point.strongest_attack if point.complete else None,
    }


def baseline_row(verdict: BaselineVerdict) -> dict[str, Any]:
    return {
        **trial_row(verdict.baseline),
        "on_front": verdict.on_front,
        "covered_by": list(verdict.covered_by),
        "verdict": verdict.describe(),
    }


def write_outcome(out: Path, outcome: StudyOutcome) -> Path:
    """Write tune.json, pareto.png and tune.html into ``out``; returns the page's path."""
    document = {
        "model": outcome.model,
        "base_accuracy": outcome.base_accuracy,
        "max_accuracy_drop": outcome.max_accuracy_drop,
        "recommendation": outcome.recommendation,
        "no_recommendation": outcome.no_recommendation,
        "chosen_trial": None
        if outcome.chosen is None or outcome.chosen.trial.baseline
        else outcome.chosen.trial.number,
        "chosen": None if outcome.chosen is None else outcome.chosen.trial.name,
        "export": outcome.export,
        "pareto": list(outcome.pareto),
        "verified": [verified_row(point) for point in outcome.verified],
        "trials": [trial_row(trial) for trial in outcome.trials],
        "baselines": [baseline_row(verdict) for verdict in outcome.baselines],
    }
    _write(out / TUNE_JSON, json.dumps(document, indent=2).encode())
    plot = pareto_plot(outcome)
    _write(out / PARETO_PNG, plot)
    environment = jinja2.Environment(loader=jinja2.PackageLoader("splitveil.tune", "templates"), autoescape=True)
    page = environment.get_template("tune.html.j2").render(
        document=document, plot="data:image/png;base64," + base64.b64encode(plot).decode()
    )
    _write(out / TUNE_HTML, page.encode())
    return out / TUNE_HTML


def pareto_plot(outcome: StudyOutcome) -> bytes:
    """Accuracy against the strongest attack's re-identification and excess SSIM, one panel each.

    Grey: over budget; blue: within budget; dots: trials; squares: baselines; ringed: the Pareto
    front; red: the re-measured figures of the Pareto points (the strongest over fresh attacker
    seeds). Dotted lines: chance re-identification (1/N), the floor's excess SSIM, and the accuracy
    budget."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    entries = [(trial, trial.number in outcome.pareto) for trial in outcome.trials]
    entries += [(verdict.baseline, verdict.on_front) for verdict in outcome.baselines]
    floor_accuracy = outcome.base_accuracy - outcome.max_accuracy_drop / 100
    for axis, measure, title in (
        (axes[0], "reid_top1", "re-identification top-1 (strongest attack)"),
        (axes[1], "excess_ssim", "excess SSIM over the output oracle"),
    ):
        for entry, on_front in entries:
            value = getattr(entry.figures, measure)
            if value is None:
                continue
            colour = "tab:blue" if entry.feasible else "0.7"
            marker = "s" if entry.baseline else "o"
            axis.scatter(value, entry.figures.accuracy, s=18, marker=marker, color=colour, zorder=2)
            if on_front:
                axis.scatter(value, entry.figures.accuracy, s=90, facecolors="none", edgecolors="k", zorder=3)
        for point in outcome.verified:
            value = point.strongest(measure)
            if value is not None:
                axis.scatter(value, point.accuracy, marker="x", s=50, color="tab:red", zorder=4)
        if floor_accuracy > 0:
            axis.axhline(floor_accuracy, color="0.4", linestyle=":", linewidth=1)
        candidates = next((t.figures.reid_candidates for t in outcome.trials if t.figures.reid_candidates), None)
        if measure == "reid_top1" and candidates:
            axis.axvline(1 / candidates, color="0.4", linestyle=":", linewidth=1)
        if measure == "excess_ssim":
            axis.axvline(AT_FLOOR_EXCESS, color="0.4", linestyle=":", linewidth=1)
        axis.set_xlabel(title)
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
    baselines = f", {len(outcome.baselines)} baselines (squares)" if outcome.baselines else ""
    figure.suptitle(f"{outcome.model}: {len(outcome.trials)} trials{baselines}; red x = re-measured Pareto points")
    return png_bytes(figure)


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
