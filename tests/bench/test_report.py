"""The report, its figures and the frontier table on tiny synthetic rows (no training): the oracle floor,
the excess over it and re-identification appear wherever leakage is shown."""

import html
import re

import pytest

from splitveil.bench import figures
from splitveil.bench.frontier import frontier_points
from splitveil.bench.report import TABLE_COLUMNS, build_report
from splitveil.bench.results import ResultRow, append_row
from splitveil.bench.tables import frontier_table

CUTS = {"conv11": 0, "relu22": 1}


def make_row(cut, defense, strength, attack, ssim, *, accuracy=0.9, oracle_ssim=None, reid_top1=None, **extra):
    attack_ssim = extra.pop("attack_ssim", None)  # the split's strongest non-oracle SSIM, for excess_ssim
    return ResultRow(
        model="m", dataset="d", cut=cut, cut_index=CUTS[cut], defense=defense, strength=strength, attack=attack,
        oracle=attack.endswith("oracle"), seed=0, accuracy=accuracy, ssim=ssim, psnr=10.0, mse=0.1, mi=None,
        privacy_accuracy=None, oracle_ssim=oracle_ssim,
        excess_ssim=None if oracle_ssim is None or attack_ssim is None else attack_ssim - oracle_ssim,
        reid_top1=reid_top1, reid_top5=None if reid_top1 is None else min(1.0, 2 * reid_top1),
        reid_candidates=None if reid_top1 is None else 100, edge_flops=10, cloud_flops=10, edge_params=5,
        feature_shape=[1], feature_bytes=4, targets=8, seconds=1.0, reconstruction_file="missing.safetensors",
        **extra,
    )  # fmt: skip


def split_rows(cut, defense, strength, *, attack_ssim, oracle_ssim, reid, accuracy=0.9):
    """One deployed split: an attack at ``attack_ssim``, a weaker one, both oracles."""
    common = dict(accuracy=accuracy, oracle_ssim=oracle_ssim, attack_ssim=attack_ssim)
    return [
        make_row(cut, defense, strength, "inverse-network", attack_ssim, reid_top1=reid, **common),
        make_row(cut, defense, strength, "rmle", attack_ssim - 0.1, reid_top1=reid / 2, **common),
        make_row(cut, defense, strength, "output-oracle", oracle_ssim, reid_top1=0.01, **common),
        make_row(cut, defense, strength, "label-oracle", 0.3, reid_top1=0.01, **common),
    ]


ROWS = [
    *split_rows("conv11", "none", 0.0, attack_ssim=0.95, oracle_ssim=0.5, reid=0.99),
    *split_rows("relu22", "none", 0.0, attack_ssim=0.9, oracle_ssim=0.55, reid=0.87, accuracy=0.91),
    *split_rows("relu22", "noise", 1.0, attack_ssim=0.56, oracle_ssim=0.55, reid=0.02),
    *split_rows("relu22", "noise", 4.0, attack_ssim=0.4, oracle_ssim=0.3, reid=0.01, accuracy=0.6),
]


def report_of(tmp_path, rows):
    for row in rows:
        append_row(tmp_path, row)
    return html.unescape(build_report(tmp_path).read_text())


def test_report_shows_oracle_floor_excess_and_reid(tmp_path):
    page = report_of(tmp_path, ROWS)
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert alts == [
        "frontier at relu22",
        "frontier at relu22 (excess SSIM)",
        "frontier at relu22 (re-identification)",
        "SSIM by cut depth",
        "Mutual information by cut depth",
        "Re-identification by cut depth",
    ]  # no MI measured: no MI frontier; no reconstructions saved: no grids
    assert (
        "At relu22 the cloud re-identifies 87% of inputs among 100 look-alikes (chance 1%), and its best attack "
        "(inverse-network, SSIM 0.90) stands 0.35 above what the answer alone gives (output oracle 0.55)." in page
    )
    assert "Undefended at <b>conv11</b>" in page and "re-identifies 99% of inputs" in page
    assert re.search(r"Best defense within the 3-point budget,\s+<b>noise 1</b>", page)
    assert "At relu22 with noise 1 the cloud re-identifies 2% " in page and "at the floor." in page
    header = re.search(r"<h2>Results</h2>.*?<thead><tr>(.*?)</tr></thead>", page, re.S).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == list(TABLE_COLUMNS)
    assert "0.870 (N=100)" in page  # re-identification beside the frontier


def test_report_without_oracle_or_reid_leaves_their_clauses_and_plots_out(tmp_path):
    rows = [make_row("relu22", "none", 0.0, "rmle", 0.6), make_row("relu22", "noise", 1.0, "rmle", 0.25)]
    page = report_of(tmp_path, rows)
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert alts == ["frontier at relu22", "SSIM by cut depth", "Mutual information by cut depth"]
    assert "At relu22 the cloud's best attack (rmle) reconstructs with SSIM 0.60." in page
    assert "At relu22 with noise 1 the cloud's best attack (rmle) reconstructs with SSIM 0.25 (unrecognizable)." in page
    assert "look-alikes (chance" not in page and "output oracle 0." not in page


def test_table_columns_place_the_floor_and_reid_after_the_image_metrics():
    start = TABLE_COLUMNS.index("mse") + 1
    assert TABLE_COLUMNS[start : start + 5] == (
        "oracle_ssim",
        "excess_ssim",
        "reid_top1",
        "reid_top5",
        "reid_candidates",
    )


def test_frontier_table_has_oracle_excess_and_reid_after_max_ssim():
    header, lines = frontier_table(ROWS)
    at = header.index("max SSIM")
    assert header[at : at + 4] == ["max SSIM", "oracle SSIM", "excess SSIM", "reid top-1"]
    assert "SSIM output-oracle" in header and "SSIM label-oracle" in header  # oracles are rows like any other
    line = next(line for line in lines if line[:2] == ["relu22", "none"])
    assert line[at : at + 4] == ["0.900", "0.550", "0.350", "0.870 (N=100)"]  # the max is over non-oracles
    header, lines = frontier_table([make_row("relu22", "none", 0.0, "rmle", 0.6)])
    assert lines[0][header.index("max SSIM") + 1 :][:3] == ["—", "—", "—"]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions draw, instead of their PNG bytes."""
    captured = []
    monkeypatch.setattr(figures, "png_bytes", lambda figure: captured.append(figure) or b"")
    return captured


def vertical_lines(axis):
    return {line.get_label(): line.get_xdata()[0] for line in axis.get_lines() if len(set(line.get_xdata())) == 1}


def test_frontier_plots_draw_each_axis_reference(drawn):
    points = frontier_points(ROWS)
    for x in ("max_ssim", "excess_ssim", "reid_top1"):
        figures.frontier_plot(points, "relu22", x=x)
    ssim, excess, reid = (figure.axes[0] for figure in drawn)
    assert vertical_lines(ssim)["output oracle (the answer alone)"] == 0.55
    assert vertical_lines(ssim)["SSIM 0.3 (He et al.: unrecognizable)"] == 0.3
    ticks = [line for line in ssim.get_lines() if line.get_marker() == "|"]
    assert sorted(ticks[0].get_xdata()) == [0.3, 0.55]  # each defended point's own oracle
    assert vertical_lines(excess)["the answer's own leakage"] == 0.0
    assert excess.get_xlim()[0] < 0 < excess.get_xlim()[1]  # every excess is positive, 0 is still shown
    assert vertical_lines(reid)["chance (1/N)"] == pytest.approx(0.01)
    assert reid.get_xlim()[0] < 0.01


def test_depth_figures_dash_the_oracles_and_draw_chance(drawn):
    figures.metric_by_depth(ROWS, "ssim", label="SSIM")
    figures.metric_by_depth(ROWS, "reid_top1", label="re-identification")
    ssim, reid = (figure.axes[0] for figure in drawn)
    styles = {line.get_label(): line.get_linestyle() for line in ssim.get_lines()}
    assert styles == {"inverse-network": "-", "rmle": "-", "output-oracle (floor)": "--", "label-oracle (floor)": "--"}
    chance = next(line for line in reid.get_lines() if line.get_label() == "chance (1/N)")
    assert set(chance.get_ydata()) == {0.01}
