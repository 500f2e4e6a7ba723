"""``report.html``: a self-contained page (images embedded) built from a bench run's directory."""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path

import jinja2
from safetensors.torch import load_file

from splitveil.bench.figures import frontier_plot, metric_by_depth, reconstruction_grid
from splitveil.bench.frontier import best_under_accuracy_loss, frontier_points
from splitveil.bench.provenance import cost_table, run_history
from splitveil.bench.results import ResultRow, one_row_per_split, read_rows
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
    "mi",
    "privacy_accuracy",
    "evaluator_accuracy",
    "privacy_index",
    "edge_flops",
    "edge_params",
    "feature_bytes",
    "seconds",
)


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
    lines = []
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


def _summary(rows: list[ResultRow]) -> dict[str, object]:
    """The headline: what was run, and per cut the undefended split's worst leak."""
    undefended: dict[str, ResultRow] = {}
    for row in rows:
        if row.defense == "none" and (row.cut not in undefended or row.ssim > undefended[row.cut].ssim):
            undefended[row.cut] = row
    return {
        "rows": len(rows),
        "cuts": list(dict.fromkeys(r.cut for r in sorted(rows, key=lambda r: r.cut_index))),
        "attacks": sorted({r.attack for r in rows}),
        "defenses": sorted({r.defense for r in rows} - {"none"}),
        "seeds": sorted({r.seed for r in rows}),
        "worst": [undefended[cut] for cut in sorted(undefended, key=lambda c: undefended[c].cut_index)],
    }


def build_report(directory: str | Path) -> Path:
    """(Re)build ``directory/report.html`` from ``results.jsonl``, the saved tensors and the spec."""
    directory = Path(directory)
    rows = read_rows(directory)
    if not rows:
        raise SplitveilError(f"no results in {directory}; run `splitveil bench run SPEC --out {directory}` first")
    spec_path = directory / "spec.resolved.yaml"
    points = frontier_points(rows)
    undefended_cuts = {p.cut for p in points if p.defense == "none"}
    defended_cuts = list(dict.fromkeys(p.cut for p in points if p.defense != "none"))
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("splitveil.bench", "templates"), autoescape=jinja2.select_autoescape()
    )
    html = environment.get_template("report.html.j2").render(
        title=f"splitveil report — {rows[0].model} on {rows[0].dataset}",
        rows=sorted(rows, key=lambda r: (r.cut_index, r.defense, r.strength, r.attack)),
        columns=TABLE_COLUMNS,
        fmt=_format,
        ssim_plot=_data_uri(metric_by_depth(rows, "ssim", label="SSIM (higher = more leakage)")),
        mi_plot=_data_uri(metric_by_depth(rows, "mi", label="MINE I(x; z), nats")),
        grids=_grids(directory, rows),
        output_privacy=_output_privacy(rows),
        frontier=points if len(points) > len(undefended_cuts) else [],
        frontier_plots=[
            {"cut": cut_name, "axis": axis, "image": _data_uri(frontier_plot(points, cut_name, x=axis))}
            for cut_name in defended_cuts
            for axis in ("max_ssim", "mi")
            if axis == "max_ssim" or any(p.mi is not None for p in points)
        ],
        best=best_under_accuracy_loss(points, max_loss=ACCURACY_LOSS_BUDGET),
        accuracy_loss_budget=ACCURACY_LOSS_BUDGET,
        spec=spec_path.read_text() if spec_path.is_file() else "(spec.resolved.yaml missing)",
        summary=_summary(rows),
        costs=cost_table(directory, rows),
        runs=run_history(directory),
    )
    path = directory / "report.html"
    path.write_text(html)
    return path
