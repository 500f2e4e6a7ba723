"""Figures of the report as PNG bytes (matplotlib's object API: no pyplot global state)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from splitveil.bench.frontier import FrontierPoint
from splitveil.bench.results import ResultRow


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG bytes (100 dpi, tight)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _show(axis, image: torch.Tensor) -> None:
    array = image.detach().clamp(0, 1).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        axis.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(array)
    axis.set_xticks([])
    axis.set_yticks([])


def reconstruction_grid(original: torch.Tensor | None, rows: Mapping[str, torch.Tensor]) -> bytes:
    """Originals in the top row (when known), each attack's reconstructions below, one labelled row per attack."""
    labelled = {**({"original": original} if original is not None else {}), **rows}
    columns = next(iter(labelled.values())).shape[0]
    figure = Figure(figsize=(1.1 * columns + 1.6, 1.15 * len(labelled)))
    axes = figure.subplots(len(labelled), columns, squeeze=False)
    for row_index, (label, images) in enumerate(labelled.items()):
        for column in range(columns):
            _show(axes[row_index][column], images[column])
        axes[row_index][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    figure.subplots_adjust(wspace=0.05, hspace=0.08)
    return png_bytes(figure)


def metric_by_depth(rows: Sequence[ResultRow], metric: str, *, label: str) -> bytes:
    """``metric`` of the undefended splits against cut depth, one line per attack (MI is one line: it
    does not depend on the attack). Oracles are dashed: they are the floor the attacks are judged
    above. For ``reid_top1`` a dotted grey line is chance, 1/N."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    names: dict[int, str] = {}
    oracles: set[str] = set()
    chance: dict[int, float] = {}
    for row in rows:
        value = getattr(row, metric)
        if value is None or row.defense != "none":
            continue
        key = "I(x; z)" if metric == "mi" else row.attack
        series[key][row.cut_index] = float(value)
        names[row.cut_index] = row.cut
        if row.oracle and metric != "mi":
            oracles.add(key)
        if metric == "reid_top1" and row.reid_candidates:
            chance[row.cut_index] = 1 / row.reid_candidates
    figure = Figure(figsize=(6, 3.4))
    axis = figure.subplots()
    for key, points in sorted(series.items()):
        depths = sorted(points)
        oracle = key in oracles
        axis.plot(
            depths,
            [points[d] for d in depths],
            marker="o",
            linestyle="--" if oracle else "-",
            label=f"{key} (floor)" if oracle else key,
        )
    if len(set(chance.values())) == 1:
        axis.axhline(next(iter(chance.values())), color="grey", linestyle=":", label="chance (1/N)")
    elif chance:  # N differs between cuts: chance per cut
        depths = sorted(chance)
        axis.plot(depths, [chance[d] for d in depths], color="grey", linestyle=":", label="chance (1/N)")
    ticks = sorted(names)
    axis.set_xticks(ticks, [names[t] for t in ticks], rotation=30, ha="right")
    axis.set_xlabel("cut (shallow → deep)")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    if series:
        axis.legend(fontsize=8)
    return png_bytes(figure)


#: The frontier plots' x axes: the strongest attack's SSIM, its excess over the output oracle's,
#: the best attack's top-1 re-identification, or MINE's I(x; z).
FRONTIER_AXES = {
    "max_ssim": "strongest attack's SSIM (lower = more private)",
    "excess_ssim": "strongest attack's SSIM above the output oracle's (lower = more private)",
    "reid_top1": "top-1 re-identification among N look-alikes (lower = more private)",
    "mi": "MINE I(x; z), nats (lower = more private)",
}


def _include_in_x(axis, value: float) -> None:
    """Widen the x axis, if needed, so that ``value`` (a reference line) is inside it with a margin."""
    left, right = axis.get_xlim()
    pad = 0.05 * max(right - left, 1e-3)
    axis.set_xlim(min(left, value - pad), max(right, value + pad))


def _reference_lines(axis, x: str, points: Sequence[FrontierPoint]) -> None:
    """The reference each axis is read against: He et al.'s 0.3 and the output oracle (max_ssim), the
    answer's own leakage (excess_ssim = 0), chance (reid_top1 = 1/N)."""
    undefended = next((p for p in points if p.defense == "none"), None)
    if x == "max_ssim":
        axis.axvline(0.3, color="grey", linestyle=":", linewidth=1, label="SSIM 0.3 (He et al.: unrecognizable)")
        if undefended is not None and undefended.oracle_ssim is not None:
            axis.axvline(
                undefended.oracle_ssim,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label="output oracle (the answer alone)",
            )
            _include_in_x(axis, undefended.oracle_ssim)
    elif x == "excess_ssim":
        axis.axvline(0.0, color="tab:red", linestyle="--", linewidth=1, label="the answer's own leakage")
        _include_in_x(axis, 0.0)
    elif x == "reid_top1":
        candidates = [p.reid_candidates for p in sorted(points, key=lambda p: p.defense != "none") if p.reid_candidates]
        if candidates:
            axis.axvline(1 / candidates[0], color="tab:red", linestyle="--", linewidth=1, label="chance (1/N)")
            _include_in_x(axis, 1 / candidates[0])


def frontier_plot(points: Sequence[FrontierPoint], cut: str, *, x: str = "max_ssim") -> bytes:
    """Accuracy against leakage at ``cut`` (``x``: a key of :data:`FRONTIER_AXES`): one line per
    defense through its strengths, the undefended split as a star, and the axis's reference line (see
    :func:`_reference_lines`). On ``max_ssim`` a small tick marks each defended point's own output
    oracle. Up-left of the star is better."""
    if x not in FRONTIER_AXES:
        raise ValueError(f"unknown frontier axis {x!r}; choose one of {sorted(FRONTIER_AXES)}")
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    by_defense: dict[str, list[FrontierPoint]] = defaultdict(list)
    for point in points:
        if point.cut == cut:
            by_defense[point.defense].append(point)
    ticked = False
    for defense, series in sorted(by_defense.items()):
        series = [p for p in series if getattr(p, x) is not None]
        if defense == "none" or not series:
            continue
        series.sort(key=lambda p: p.strength)
        (line,) = axis.plot(
            [getattr(p, x) for p in series], [100 * p.accuracy for p in series], marker="o", label=defense
        )
        for p in series:
            axis.annotate(
                f"{p.strength:g}",
                (getattr(p, x), 100 * p.accuracy),
                fontsize=7,
                alpha=0.7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        floors = [p for p in series if p.oracle_ssim is not None]
        if x == "max_ssim" and floors:
            axis.plot(
                [p.oracle_ssim for p in floors if p.oracle_ssim is not None],  # all of them: narrows the type
                [100 * p.accuracy for p in floors],
                marker="|",
                markersize=10,
                linestyle="",
                color=line.get_color(),
                alpha=0.6,
                label=None if ticked else "a point's own output oracle",
            )
            ticked = True
    for p in by_defense.get("none", []):
        if getattr(p, x) is None:
            continue
        axis.plot(
            [getattr(p, x)],
            [100 * p.accuracy],
            marker="*",
            markersize=14,
            color="black",
            linestyle="",
            label="undefended",
        )
    _reference_lines(axis, x, [p for series in by_defense.values() for p in series])
    axis.set_xlabel(FRONTIER_AXES[x])
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"privacy-utility frontier at {cut}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return png_bytes(figure)
