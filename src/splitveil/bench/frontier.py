"""Privacy-utility frontiers: one point per (cut, defense, strength), judged by its strongest attack.

A defense is only as good as the best attack against it, so a point's leakage is the *maximum* SSIM
over every attack run on that deployed split (each attack already adaptive: it trained against the
defended edge), and its re-identification rate the maximum ``reid_top1`` over them. Oracles
(``output-oracle``, ``label-oracle``) are not attacks to beat but the floor: the output oracle's SSIM
is what the cloud's answer alone gives away, and ``excess_ssim`` is the leakage above it. The
undefended split is the ``none`` point of every cut.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
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
    #: The output oracle's SSIM and the strongest attack's excess over it (None without an output oracle).
    oracle_ssim: float | None = None
    excess_ssim: float | None = None
    #: The label oracle's SSIM (the true label alone), when it ran.
    label_oracle_ssim: float | None = None
    #: The highest re-identification rates over the attacks (None when none was measured), out of N.
    reid_top1: float | None = None
    reid_top5: float | None = None
    reid_candidates: int | None = None
    reid_attack: str | None = None


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
        attacks = [row for row in group if not row.oracle] or group
        strongest = max(attacks, key=lambda row: row.ssim)
        reidentified = [row for row in attacks if row.reid_top1 is not None]
        best_reid = max(reidentified, key=lambda row: (row.reid_top1, row.reid_top5 or 0.0), default=None)
        label_oracle = next((row.ssim for row in group if row.attack == "label-oracle"), None)
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
                attacks=len(attacks),
                oracle_ssim=strongest.oracle_ssim,
                excess_ssim=strongest.excess_ssim,
                label_oracle_ssim=label_oracle,
                reid_top1=None if best_reid is None else best_reid.reid_top1,
                reid_top5=None if best_reid is None else best_reid.reid_top5,
                reid_candidates=None if best_reid is None else best_reid.reid_candidates,
                reid_attack=None if best_reid is None else best_reid.attack,
            )
        )
    return sorted(points, key=lambda p: (p.cut_index, p.cut, p.defense != "none", p.defense, p.strength))


def best_under_accuracy_loss(points: Sequence[FrontierPoint], *, max_loss: float) -> dict[str, FrontierPoint]:
    """Per cut, the most private defended point among those whose accuracy is within ``max_loss`` (a
    fraction: 0.03 = 3 points) of that cut's undefended accuracy.

    Most private: the lowest ``excess_ssim`` (the strongest attack's SSIM above the output oracle's,
    the leakage the answer alone does not explain) when every such point of the cut has one, else the
    lowest ``max_ssim``; ties (equal to the three decimals the tables show) go to the lower
    ``reid_top1`` (unmeasured counts as worst), then the lower ``max_ssim``."""
    undefended = {p.cut: p.accuracy for p in points if p.defense == "none"}
    eligible: dict[str, list[FrontierPoint]] = defaultdict(list)
    for point in points:
        reference = undefended.get(point.cut)
        if point.defense != "none" and reference is not None and reference - point.accuracy <= max_loss:
            eligible[point.cut].append(point)
    return {cut: min(candidates, key=_privacy_rank(candidates)) for cut, candidates in eligible.items()}


def _privacy_rank(candidates: Sequence[FrontierPoint]) -> Callable[[FrontierPoint], tuple[float, float, float]]:
    """The sort key of :func:`best_under_accuracy_loss` over ``candidates`` (lower = more private)."""
    by_excess = all(p.excess_ssim is not None for p in candidates)

    def key(point: FrontierPoint) -> tuple[float, float, float]:
        excess = point.excess_ssim
        leakage = round(excess if by_excess and excess is not None else point.max_ssim, 3)
        reid = float("inf") if point.reid_top1 is None else point.reid_top1
        return (leakage, reid, point.max_ssim)

    return key
