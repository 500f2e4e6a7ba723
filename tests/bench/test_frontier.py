"""Frontier points: a deployed split is judged by its strongest attack; the summary respects the budget."""

from splitveil.bench.frontier import best_under_accuracy_loss, frontier_points
from splitveil.bench.results import ResultRow

COMMON = dict(
    model="m", dataset="d", seed=0, psnr=0.0, mse=0.0, mi=None, privacy_accuracy=None, edge_flops=1,
    cloud_flops=1, edge_params=1, feature_shape=[1], feature_bytes=4, targets=1, seconds=0.0, reconstruction_file="",
)  # fmt: skip


def row(defense, strength, attack, ssim, accuracy, cut="relu22"):
    return ResultRow(cut=cut, cut_index=0, defense=defense, strength=strength, attack=attack, ssim=ssim,
                     accuracy=accuracy, **COMMON)  # fmt: skip


ROWS = [
    row("none", 0, "rmle", 0.6, 0.91),
    row("none", 0, "inverse-network", 0.8, 0.91),
    row("noise", 1, "rmle", 0.2, 0.90),
    row("noise", 1, "inverse-network", 0.5, 0.90),  # the strongest attack decides: 0.5
    row("noise", 4, "rmle", 0.1, 0.70),
    row("noise", 4, "inverse-network", 0.2, 0.70),  # most private, but 21 points of accuracy lost
    row("nopeek", 1, "rmle", 0.4, 0.89),
    row("nopeek", 1, "inverse-network", 0.45, 0.89),
]


def test_each_point_takes_the_maximum_ssim_over_attacks():
    points = {(p.defense, p.strength): p for p in frontier_points(ROWS)}
    assert points[("none", 0)].max_ssim == 0.8 and points[("none", 0)].strongest_attack == "inverse-network"
    assert points[("noise", 1)].max_ssim == 0.5 and points[("noise", 4)].max_ssim == 0.2
    assert all(p.attacks == 2 for p in points.values())


def test_points_are_sorted_undefended_first():
    assert [(p.defense, p.strength) for p in frontier_points(ROWS)][:2] == [("none", 0), ("noise", 1)]


def test_best_defense_respects_the_accuracy_budget():
    best = best_under_accuracy_loss(frontier_points(ROWS), max_loss=0.03)
    assert (best["relu22"].defense, best["relu22"].strength) == ("nopeek", 1)
    loose = best_under_accuracy_loss(frontier_points(ROWS), max_loss=0.25)
    assert (loose["relu22"].defense, loose["relu22"].strength) == ("noise", 4)
    assert best_under_accuracy_loss(frontier_points(ROWS), max_loss=0.0) == {}


def floored(defense, strength, ssim, accuracy, *, oracle_ssim, reid_top1=None):
    """A split's one attack row with its output oracle's SSIM and its excess."""
    return row(defense, strength, "inverse-network", ssim, accuracy).model_copy(
        update={"oracle_ssim": oracle_ssim, "excess_ssim": ssim - oracle_ssim, "reid_top1": reid_top1,
                "reid_candidates": None if reid_top1 is None else 100}
    )  # fmt: skip


def test_best_defense_ranks_by_excess_over_the_oracle_then_reid():
    rows = [
        floored("none", 0, 0.8, 0.91, oracle_ssim=0.5, reid_top1=0.9),
        floored("noise", 1, 0.45, 0.90, oracle_ssim=0.2, reid_top1=0.3),  # lowest SSIM, but 0.25 above its answer
        floored("funnel", 1, 0.6, 0.90, oracle_ssim=0.55, reid_top1=0.2),  # 0.05 above: the most private
        floored("nopeek", 1, 0.55, 0.90, oracle_ssim=0.5, reid_top1=0.1),  # 0.05 above too, fewer re-identified
    ]
    best = best_under_accuracy_loss(frontier_points(rows), max_loss=0.03)
    assert best["relu22"].defense == "nopeek"  # a tie to three decimals (not in floats): re-identification decides
    without_nopeek = best_under_accuracy_loss(frontier_points(rows[:3]), max_loss=0.03)
    assert without_nopeek["relu22"].defense == "funnel"


def test_best_defense_falls_back_to_max_ssim_when_a_candidate_has_no_oracle():
    rows = [
        floored("none", 0, 0.8, 0.91, oracle_ssim=0.5),
        floored("noise", 1, 0.45, 0.90, oracle_ssim=0.2),
        row("nopeek", 1, "inverse-network", 0.55, 0.90),  # an older run: no oracle
    ]
    assert best_under_accuracy_loss(frontier_points(rows), max_loss=0.03)["relu22"].defense == "noise"


def test_oracles_are_the_floor_not_the_strongest_attack():
    rows = [*ROWS[:2], row("none", 0, "output-oracle", 0.95, 0.91).model_copy(update={"oracle": True})]
    (point,) = frontier_points(rows)
    assert (point.strongest_attack, point.max_ssim, point.attacks) == ("inverse-network", 0.8, 2)
