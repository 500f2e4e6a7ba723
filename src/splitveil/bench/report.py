"""``report.html``: a self-contained page (images embedded) built from a bench run's directory."""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path

import jinja2
from safetensors.torch import load_file

from splitveil.bench.figures import FRONTIER_AXES, frontier_plot, metric_by_depth, reconstruction_grid
from splitveil.bench.frontier import FrontierPoint, best_under_accuracy_loss, frontier_points
from splitveil.bench.provenance import cost_table, run_history
from splitveil.bench.results import ResultRow, one_row_per_split, read_rows
from splitveil.bench.tables import format_reid
from splitveil.bench.verdict import leakage_sentence
from splitveil.errors import SplitveilError

REPORT_FILE = "report.html"
#: The summary's accuracy-loss budget (a fraction): the issues judge defenses at 3 points.
ACCURACY_LOSS_BUDGET = 0.03
TABLE_COLUMNS = (
    "cut",
    "defense",
    "strength",
    "attack",
    "accuracy",
    "ssim",
    "psnr",
    "mse",
    "oracle_ssim",
    "excess_ssim",
    "reid_top1",
    "reid_top5",
    "reid_candidates",
    "mi",
    "privacy_accuracy",
    "evaluator_accuracy",
    "privacy_index",
    "edge_flops",
    "edge_params",
    "feature_bytes",
    "seconds",
)
#: How each frontier plot's alt text names its x axis (the max_ssim plot is the plain one).
FRONTIER_PLOT_NAMES = {
    "max_ssim": "",
    "excess_ssim": " (excess SSIM)",
    "reid_top1": " (re-identification)",
    "mi": " (MI)",
}


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _grids(directory: Path, rows: list[ResultRow]) -> list[dict[str, str]]:
    by_cut: dict[tuple[str, str, float], list[ResultRow]] = defaultdict(list)
    for row in rows:
        by_cut[(row.cut, row.defense, row.strength)].append(row)
    grids = []
    for (cut_name, defense, strength), cell_rows in sorted(by_cut.items(), key=lambda item: item[1][0].cut_index):
        original = None
        reconstructions = {}
        for row in cell_rows:
            path = directory / row.reconstruction_file
            if not path.is_file():
                continue
            tensors = load_file(str(path))
            original = tensors["original"]
            reconstructions[f"{row.attack}\nSSIM {row.ssim:.2f}"] = tensors["reconstruction"]
        if original is not None:
            title = cut_name if defense == "none" else f"{cut_name} · {defense} {strength:g}"
            grids.append({"title": title, "image": _data_uri(reconstruction_grid(original, reconstructions))})
    return grids


def _output_privacy(rows: list[ResultRow]) -> list[dict[str, object]]:
    """One line per deployed split and observation, from rows that carry an output-inference audit."""
    lines: list[dict[str, object]] = []
    for row in one_row_per_split(rows):
        if row.output_privacy is None:
            continue
        for observe, figures in row.output_privacy.items():
            lines.append(
                {
                    "cut": row.cut,
                    "defense": row.defense,
                    "strength": row.strength,
                    "accuracy": row.accuracy,
                    "edge_flops": row.edge_flops,
                    "observe": observe,
                    **figures,
                }
            )
    return lines


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def _summary(rows: list[ResultRow], points: list[FrontierPoint], best: dict[str, FrontierPoint]) -> dict[str, object]:
    """The headline: what was run, and per cut the undefended split's leakage and the best defense
    within the budget, each with its plain-words sentence (:func:`~splitveil.bench.verdict.leakage_sentence`)."""
    cuts = [
        {
            "point": point,
            "sentence": leakage_sentence(point),
            "best": best.get(point.cut),
            "best_sentence": leakage_sentence(best[point.cut]) if point.cut in best else None,
        }
        for point in points
        if point.defense == "none"
    ]
    return {
        "rows": len(rows),
        "cuts": list(dict.fromkeys(r.cut for r in sorted(rows, key=lambda r: r.cut_index))),
        "attacks": sorted({r.attack for r in rows}),
        "defenses": sorted({r.defense for r in rows} - {"none"}),
        "seeds": sorted({r.seed for r in rows}),
        "per_cut": cuts,
    }


def _frontier_plots(points: list[FrontierPoint]) -> list[dict[str, str]]:
    """Per defended cut, one frontier plot per axis of :data:`FRONTIER_AXES` that the cut has values of."""
    plots = []
    for cut in dict.fromkeys(p.cut for p in points if p.defense != "none"):
        at_cut = [p for p in points if p.cut == cut]
        for axis in FRONTIER_AXES:
            if axis == "max_ssim" or any(getattr(p, axis) is not None for p in at_cut):
                image = _data_uri(frontier_plot(points, cut, x=axis))
                plots.append({"cut": cut, "axis": axis, "name": FRONTIER_PLOT_NAMES[axis], "image": image})
    return plots


def build_report(directory: str | Path) -> Path:
    """(Re)build ``directory/report.html`` from ``results.jsonl``, the saved tensors and the spec."""
    directory = Path(directory)
    rows = read_rows(directory)
    if not rows:
        raise SplitveilError(f"no results in {directory}; run `splitveil bench run SPEC --out {directory}` first")
    spec_path = directory / "spec.resolved.yaml"
    points = frontier_points(rows)
    undefended_cuts = {p.cut for p in points if p.defense == "none"}
    best = best_under_accuracy_loss(points, max_loss=ACCURACY_LOSS_BUDGET)
    reid_plot = None
    if any(row.reid_top1 is not None for row in rows):
        reid_plot = _data_uri(
            metric_by_depth(rows, "reid_top1", label="top-1 re-identification (higher = more leakage)")
        )
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("splitveil.bench", "templates"), autoescape=jinja2.select_autoescape()
    )
    html = environment.get_template("report.html.j2").render(
        title=f"splitveil report — {rows[0].model} on {rows[0].dataset}",
        rows=sorted(rows, key=lambda r: (r.cut_index, r.defense, r.strength, r.attack)),
        columns=TABLE_COLUMNS,
        fmt=_format,
        reid=format_reid,
        ssim_plot=_data_uri(metric_by_depth(rows, "ssim", label="SSIM (higher = more leakage)")),
        mi_plot=_data_uri(metric_by_depth(rows, "mi", label="MINE I(x; z), nats")),
        reid_plot=reid_plot,
        grids=_grids(directory, rows),
        output_privacy=_output_privacy(rows),
        frontier=points if len(points) > len(undefended_cuts) else [],
        frontier_plots=_frontier_plots(points),
        best=best,
        accuracy_loss_budget=ACCURACY_LOSS_BUDGET,
        spec=spec_path.read_text() if spec_path.is_file() else "(spec.resolved.yaml missing)",
        summary=_summary(rows, points, best),
        costs=cost_table(directory, rows),
        runs=run_history(directory),
    )
    path = directory / "report.html"
    path.write_text(html)
    return path
