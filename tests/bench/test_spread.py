"""Spread over seeds: each split's figures summarised as mean, lowest and highest over the runs."""

import pytest

from splitveil.bench.results import ResultRow
from splitveil.bench.spread import DeployedAccuracy, Spread, accuracy_spread, seed_spread, spread_table
from splitveil.errors import ConfigError

COMMON = dict(
    model="m", dataset="d", psnr=0.0, mse=0.0, mi=None, privacy_accuracy=None, edge_flops=1, cloud_flops=1,
    edge_params=1, feature_shape=[1], feature_bytes=4, targets=1, seconds=0.0, reconstruction_file="",
)  # fmt: skip


def row(seed, defense, strength, attack, ssim, accuracy, **extra):
    return ResultRow(seed=seed, cut="relu22", cut_index=8, defense=defense, strength=strength, attack=attack,
                     ssim=ssim, accuracy=accuracy, **COMMON, **extra)  # fmt: skip


def run(seed, nopeek_ssim, nopeek_accuracy, reid=None):
    leak = {} if reid is None else {"reid_top1": reid, "reid_candidates": 100, "oracle_ssim": 0.5,
                                    "excess_ssim": nopeek_ssim - 0.5}  # fmt: skip
    return [
        row(seed, "none", 0, "inverse-network", 0.9, 0.91),
        row(seed, "nopeek", 4, "rmle", 0.1, nopeek_accuracy),
        row(seed, "nopeek", 4, "inverse-network", nopeek_ssim, nopeek_accuracy, **leak),
    ]


def test_each_split_is_summarised_over_its_seeds_by_its_strongest_attack():
    spreads = seed_spread([run(0, 0.70, 0.88), run(1, 0.76, 0.86), run(2, 0.73, 0.87)])
    assert [(s.defense, s.seeds) for s in spreads] == [("none", (0, 1, 2)), ("nopeek", (0, 1, 2))]
    nopeek = spreads[1]
    assert nopeek.max_ssim == Spread(pytest.approx(0.73), 0.70, 0.76)
    assert nopeek.accuracy == Spread(pytest.approx(0.87), 0.86, 0.88)
    assert nopeek.max_ssim.width == pytest.approx(0.06)
    assert nopeek.excess_ssim is None and nopeek.reid_top1 is None and nopeek.seeds_at_floor == 0


def test_leakage_above_the_answer_and_the_floor_are_counted_per_seed():
    spreads = seed_spread([run(0, 0.51, 0.88, reid=0.01), run(1, 0.60, 0.86, reid=0.30)])
    nopeek = spreads[1]
    assert nopeek.excess_ssim == Spread(pytest.approx(0.055), pytest.approx(0.01), pytest.approx(0.10))
    assert nopeek.reid_top1 == Spread(pytest.approx(0.155), 0.01, 0.30)
    assert nopeek.seeds_at_floor == 1  # seed 0: excess 0.01 and reid 1/100; seed 1 is far above it


def test_a_split_missing_from_a_run_is_summarised_over_the_seeds_that_have_it():
    spreads = seed_spread([run(0, 0.70, 0.88), run(1, 0.76, 0.86)[:1]])
    assert [s.seeds for s in spreads] == [(0, 1), (0,)]


def test_the_same_seed_twice_or_a_mixed_run_is_refused():
    with pytest.raises(ConfigError, match="two runs have seed 0"):
        seed_spread([run(0, 0.7, 0.88), run(0, 0.7, 0.88)])
    with pytest.raises(ConfigError, match="seeds \\[0, 1\\]"):
        seed_spread([run(0, 0.7, 0.88) + run(1, 0.7, 0.88)])
    with pytest.raises(ConfigError, match="no attack rows"):
        seed_spread([[]])


def test_the_table_prints_mean_and_range():
    header, lines = spread_table(seed_spread([run(0, 0.70, 0.88), run(1, 0.76, 0.86)]))
    assert header[5] == "max SSIM"
    assert lines[1][3:6] == ["0,1", "87.00% [86.00, 88.00]", "0.730 [0.700, 0.760]"]
    assert lines[1][-1] == "0/2"


def test_bench_spread_prints_the_table_of_several_run_directories(tmp_path):
    from typer.testing import CliRunner

    from splitveil.bench.results import append_row
    from splitveil.cli import app

    for seed, ssim in ((0, 0.70), (1, 0.76)):
        (tmp_path / f"seed{seed}").mkdir()
        for one in run(seed, ssim, 0.87):
            append_row(tmp_path / f"seed{seed}", one)
    result = CliRunner().invoke(
        app, ["bench", "spread", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--markdown"]
    )
    assert result.exit_code == 0, result.output
    assert "| relu22 | nopeek | 4 | 0,1 | 87.00% [87.00, 87.00] | 0.730 [0.700, 0.760] |" in result.output
    refused = CliRunner().invoke(app, ["bench", "spread", str(tmp_path / "seed0"), str(tmp_path / "seed0")])
    assert refused.exit_code != 0 and "two runs have seed 0" in str(refused.exception)


def deployed(defense, strength, accuracy):
    return DeployedAccuracy(cut="relu22", cut_index=8, defense=defense, strength=strength, accuracy=accuracy)


def test_runs_without_attacks_give_the_accuracy_spread_alone():
    spreads = accuracy_spread([
        (0, [deployed("none", 0, 0.9123), deployed("gaussian-noise", 0.25, 0.9111)]),
        (1, [deployed("gaussian-noise", 0.25, 0.9125), deployed("none", 0, 0.9114)]),
        (2, [deployed("gaussian-noise", 0.25, 0.9116)]),
    ])  # fmt: skip
    assert [(s.defense, s.seeds) for s in spreads] == [("none", (0, 1)), ("gaussian-noise", (0, 1, 2))]
    noise = spreads[1]
    assert noise.accuracy == Spread(pytest.approx(0.9117333), 0.9111, 0.9125)
    assert noise.max_ssim is None and noise.excess_ssim is None and noise.reid_top1 is None
    assert noise.seeds_at_floor is None
    _, lines = spread_table(spreads)
    assert lines[1][4:] == ["91.17% [91.11, 91.25]", "—", "—", "—", "—"]
    with pytest.raises(ConfigError, match="two runs have seed 0"):
        accuracy_spread([(0, [deployed("none", 0, 0.9)]), (0, [deployed("none", 0, 0.9)])])
    with pytest.raises(ConfigError, match="run 2 has no finished deploy cell"):
        accuracy_spread([(0, [deployed("none", 0, 0.9)]), (1, [])])


DEPLOY_ONLY = {
    "name": "tiny-deploy-only",
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["relu22"],
    "attacks": [],
    "defenses": [{"name": "gaussian-noise", "strengths": [0.5]}],
    "audit": {"targets": 8, "grid_images": 4, "mine": {"enabled": False}, "evaluator": {"enabled": False}},
}


def test_bench_spread_of_runs_without_attacks_reads_their_deploy_cells(tmp_path):
    from typer.testing import CliRunner

    from splitveil.bench import run_bench
    from splitveil.bench.store import ResultStore
    from splitveil.checkpoint import CheckpointCache
    from splitveil.cli import app
    from splitveil.config import parse_spec

    stored = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        run_bench(parse_spec({**DEPLOY_ONLY, "seed": seed}), out, cache=CheckpointCache(tmp_path / "c"), progress=False)
        with ResultStore(out) as store:
            stored[seed] = store.cells()["deploy/relu22/gaussian-noise/0.5"].result["accuracy"]
    result = CliRunner().invoke(
        app, ["bench", "spread", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--markdown"]
    )
    assert result.exit_code == 0, result.output
    low, high = sorted(stored.values())
    mean = (low + high) / 2
    line = f"| relu22 | gaussian-noise | 0.5 | 0,1 | {100 * mean:.2f}% [{100 * low:.2f}, {100 * high:.2f}] | — | — | — | — |"
    assert line in result.output
    assert "| relu22 | none | 0 | 0,1 |" in result.output


def test_bench_spread_refuses_runs_with_and_without_attacks_together(tmp_path):
    from typer.testing import CliRunner

    from splitveil.bench.results import append_row
    from splitveil.cli import app

    (tmp_path / "attacked").mkdir()
    (tmp_path / "deploy-only").mkdir()
    for one in run(0, 0.7, 0.87):
        append_row(tmp_path / "attacked", one)
    mixed = CliRunner().invoke(app, ["bench", "spread", str(tmp_path / "attacked"), str(tmp_path / "deploy-only")])
    assert mixed.exit_code != 0 and "run 2 holds no attack rows" in str(mixed.exception)
