"""A deployed split's leakage in one plain-words sentence, for the report's summary.

The sentence says what a reader needs before any table: how often the cloud re-identifies an input
among look-alikes (against chance), and how far its best attack stands above what the answer alone
gives (the output oracle). A split within :data:`AT_FLOOR_EXCESS` of the oracle's SSIM and within
twice chance of re-identification is *at the floor*: it leaks no more than the answer does.
"""

from __future__ import annotations

from splitveil.bench.frontier import FrontierPoint

#: The excess SSIM over the output oracle that still counts as "no more than the answer".
AT_FLOOR_EXCESS = 0.02
#: Re-identification within this many times chance (1/N) still counts as "no more than the answer".
AT_FLOOR_REID_CHANCES = 2


def _percent(fraction: float) -> str:
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 1 or percent == 0 else f"{percent:.2g}%"


def _subject(point: FrontierPoint) -> str:
    if point.defense == "none":
        return f"At {point.cut}"
    return f"At {point.cut} with {point.defense} {point.strength:g}"


def at_floor(point: FrontierPoint) -> bool:
    """Whether ``point`` leaks no more than its answer: excess SSIM at most :data:`AT_FLOOR_EXCESS` and
    (where measured) top-1 re-identification at most :data:`AT_FLOOR_REID_CHANCES` / N.
    Without an output oracle there is no floor, so never."""
    if point.excess_ssim is None or point.excess_ssim > AT_FLOOR_EXCESS:
        return False
    if point.reid_top1 is None or not point.reid_candidates:
        return True
    return point.reid_top1 <= AT_FLOOR_REID_CHANCES / point.reid_candidates


def leakage_sentence(point: FrontierPoint) -> str:
    """One sentence on ``point``'s leakage; clauses whose measure is missing (no re-identification, no
    output oracle) are left out.

    Example:
        >>> point = FrontierPoint(cut="relu22", cut_index=0, defense="none", strength=0.0, accuracy=0.9,
        ...     max_ssim=0.9, strongest_attack="inverse-network", mi=None, edge_flops=1, edge_params=1,
        ...     feature_bytes=4, attacks=2, oracle_ssim=0.55, excess_ssim=0.35, reid_top1=0.87,
        ...     reid_candidates=100)
        >>> print(leakage_sentence(point))
        At relu22 the cloud re-identifies 87% of inputs among 100 look-alikes (chance 1%), and its best attack (inverse-network, SSIM 0.90) stands 0.35 above what the answer alone gives (output oracle 0.55).
    """
    top1, candidates = point.reid_top1, point.reid_candidates
    if top1 is not None and candidates:
        opening = (
            f"the cloud re-identifies {_percent(top1)} of inputs among {candidates} look-alikes "
            f"(chance {_percent(1 / candidates)}), and its best attack"
        )
    else:
        opening = "the cloud's best attack"
    if point.oracle_ssim is None or point.excess_ssim is None:
        unrecognizable = " (unrecognizable)" if point.max_ssim < 0.3 else ""
        attack = f"({point.strongest_attack}) reconstructs with SSIM {point.max_ssim:.2f}{unrecognizable}"
    else:
        if round(point.excess_ssim, 2) == 0:
            standing = "matches"
        else:
            side = "above" if point.excess_ssim > 0 else "below"
            standing = f"stands {abs(point.excess_ssim):.2f} {side}"
        attack = (
            f"({point.strongest_attack}, SSIM {point.max_ssim:.2f}) {standing} what the answer alone gives "
            f"(output oracle {point.oracle_ssim:.2f})"
        )
    ending = "; it leaks no more than the answer: at the floor." if at_floor(point) else "."
    return f"{_subject(point)} {opening} {attack}{ending}"


def leakage_clause(point: FrontierPoint) -> str:
    """:func:`leakage_sentence` without its subject ("At relu22 with ..."), for a caller that names the split."""
    return leakage_sentence(point).removeprefix(f"{_subject(point)} ")
