"""Hand-made measured points for the tuner's pure logic (ranking, the front, the report)."""

from splitveil.bench.frontier import FrontierPoint
from splitveil.config import DefenseSpec
from splitveil.tune.space import Point
from splitveil.tune.study import Measured


def make_measured(
    number: int, accuracy: float, reid: float | None, excess: float, *, drop: float = 0.0,
    feasible: bool | None = None, baseline: bool = False,
) -> Measured:  # fmt: skip
    """A bounded-noise point at relu22 with these figures; within budget when ``drop`` <= 3 unless told."""
    label = f"bounded-noise-{'b' if baseline else ''}{number}"
    defense = DefenseSpec(name="bounded-noise", strengths=[0.5], label=label)
    figures = FrontierPoint(
        cut="relu22", cut_index=5, defense=label, strength=0.5, accuracy=accuracy, max_ssim=0.5 + excess,
        strongest_attack="inverse-network", mi=None, edge_flops=9_257_472, edge_params=7_000, feature_bytes=25_088,
        attacks=2, oracle_ssim=0.5, excess_ssim=excess, reid_top1=reid, reid_candidates=100,
    )  # fmt: skip
    within = drop <= 3 if feasible is None else feasible
    return Measured(number, Point("relu22", "bounded-noise", defense), figures, drop, within, baseline=baseline)
