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
