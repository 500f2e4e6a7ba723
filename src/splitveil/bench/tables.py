"""The frontier of a run as a table: one line per deployed split, every attack's SSIM beside the
strongest, with privacy, utility and cost side by side (``splitveil bench frontier DIR``)."""

from __future__ import annotations

from collections.abc import Sequence

from splitveil.bench.frontier import FrontierPoint, frontier_points
from splitveil.bench.results import ResultRow


def frontier_table(rows: Sequence[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)``: cut, defense, strength, accuracy and its loss against the undefended split
    in points (negative: a gain), each attack's SSIM (oracles too: they are rows like any other), the
    strongest non-oracle's, the output oracle's and the excess over it, the best top-1
    re-identification out of N, MI, the lowest privacy index over the attacks, edge FLOPs, edge
    parameters and feature bytes."""
    attacks = list(dict.fromkeys(row.attack for row in rows))
    by_cell = {(row.cut, row.defense, row.strength, row.attack): row for row in rows}
    undefended = {row.cut: row.accuracy for row in rows if row.defense == "none"}
    header = ["cut", "defense", "strength", "accuracy", "loss (pts)", *(f"SSIM {a}" for a in attacks)]
    header += [
        "max SSIM",
        "oracle SSIM",
        "excess SSIM",
        "reid top-1",
        "MI",
        "PI (worst)",
        "edge FLOPs",
        "edge params",
        "feature bytes",
    ]
    lines = []
    for point in frontier_points(rows):
        cells = [by_cell.get((point.cut, point.defense, point.strength, attack)) for attack in attacks]
        indices = [cell.privacy_index for cell in cells if cell is not None and cell.privacy_index is not None]
        loss = (undefended[point.cut] - point.accuracy) * 100 if point.cut in undefended else None
        lines.append(
            [
                point.cut,
                point.defense,
                f"{point.strength:g}",
                f"{point.accuracy * 100:.2f}%",
                "—" if loss is None else f"{loss:.2f}",
                *("—" if cell is None else f"{cell.ssim:.3f}" for cell in cells),
                f"{point.max_ssim:.3f}",
                _decimal(point.oracle_ssim),
                _decimal(point.excess_ssim),
                format_reid(point),
                "—" if point.mi is None else f"{point.mi:.2f}",
                "—" if not indices else f"{min(indices):.3f}",
                f"{point.edge_flops:,}",
                f"{point.edge_params:,}",
                f"{point.feature_bytes:,}",
            ]
        )
    return header, lines


def _decimal(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_reid(point: FrontierPoint) -> str:
    """Top-1 re-identification with its N, e.g. ``0.953 (N=100)``."""
    if point.reid_top1 is None:
        return "—"
    return f"{point.reid_top1:.3f}" + ("" if point.reid_candidates is None else f" (N={point.reid_candidates})")


def as_markdown(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    rendered = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rendered += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(rendered)
