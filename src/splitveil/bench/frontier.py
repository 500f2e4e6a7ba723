"""Privacy-utility frontiers: one point per (cut, defense, strength), judged by its strongest attack.

A defense is only as good as the best attack against it, so a point's leakage is the *maximum* SSIM
over every attack run on that deployed split (each attack already adaptive: it trained against the
defended edge). The undefended split is the ``none`` point of every cut.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from splitveil.bench.results import ResultRow


@dataclass(frozen=True)
class FrontierPoint:
    """One deployed split: its accuracy and its leakage to the strongest attack, with its cost."""

    cut: str
    cut_index: int
    defense: str
    strength: float
    accuracy: float
    max_ssim: float
    strongest_attack: str
    mi: float | None
    edge_flops: int
    edge_params: int
    feature_bytes: int
    attacks: int


def frontier_points(rows: Sequence[ResultRow]) -> list[FrontierPoint]:
    """Group rows by (cut, defense, strength) and keep each group's strongest attack, sorted by cut,
    then defense (undefended first), then strength.

    Example:
        >>> from splitveil.bench.results import ResultRow
        >>> common = dict(model="m", dataset="d", cut="c", cut_index=0, seed=0, accuracy=0.9, psnr=0.0,
        ...     mse=0.0, mi=None, privacy_accuracy=None, edge_flops=1, cloud_flops=1, edge_params=1,
        ...     feature_shape=[1], feature_bytes=4, targets=1, seconds=0.0, reconstruction_file="")
        >>> rows = [ResultRow(defense="none", strength=0.0, attack="a", ssim=0.4, **common),
        ...         ResultRow(defense="none", strength=0.0, attack="b", ssim=0.7, **common)]
        >>> point, = frontier_points(rows)
        >>> point.max_ssim, point.strongest_attack
        (0.7, 'b')
    """
    groups: dict[tuple[str, str, float], list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[(row.cut, row.defense, row.strength)].append(row)
    points = []
    for (cut, defense, strength), group in groups.items():
        strongest = max(group, key=lambda row: row.ssim)
        points.append(
            FrontierPoint(
                cut=cut,
                cut_index=strongest.cut_index,
                defense=defense,
                strength=strength,
                accuracy=strongest.accuracy,
                max_ssim=strongest.ssim,
                strongest_attack=strongest.attack,
                mi=strongest.mi,
                edge_flops=strongest.edge_flops,
                edge_params=strongest.edge_params,
                feature_bytes=strongest.feature_bytes,
                attacks=len(group),
            )
        )
    return sorted(points, key=lambda p: (p.cut_index, p.cut, p.defense != "none", p.defense, p.strength))


def best_under_accuracy_loss(points: Sequence[FrontierPoint], *, max_loss: float) -> dict[str, FrontierPoint]:
    """Per cut, the defended point with the lowest strongest-attack SSIM among those whose accuracy is
    within ``max_loss`` (a fraction: 0.03 = 3 points) of that cut's undefended accuracy."""
    undefended = {p.cut: p.accuracy for p in points if p.defense == "none"}
    best: dict[str, FrontierPoint] = {}
    for point in points:
        reference = undefended.get(point.cut)
        if point.defense == "none" or reference is None or reference - point.accuracy > max_loss:
            continue
        if point.cut not in best or point.max_ssim < best[point.cut].max_ssim:
            best[point.cut] = point
    return best
