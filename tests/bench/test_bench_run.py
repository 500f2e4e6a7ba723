"""End to end on small real data: spec -> trained model -> attacks per cut -> results.jsonl + report."""

import json
import re

import pytest

from splitveil.bench import build_report, read_rows, run_bench
from splitveil.config import parse_spec
from splitveil.errors import SplitveilError

SPEC = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["conv11", "relu22"],
    "attacks": [
        {"name": "rmle", "options": {"steps": 10}},
        {"name": "inverse-network", "options": {"epochs": 1}},
        {"name": "output-oracle", "options": {"epochs": 1}},
        {"name": "label-oracle", "options": {"steps": 5, "samples": 20}},
    ],
    "audit": {"targets": 8, "grid_images": 4, "mine": {"samples": 128, "steps": 20}, "evaluator": {"epochs": 1}},
}
REQUIRED = ("accuracy", "ssim", "psnr", "mse", "mi", "privacy_accuracy", "edge_flops", "feature_bytes", "seconds")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cache = tmp_path_factory.mktemp("cache")
    from splitveil.checkpoint import CheckpointCache

    run_bench(parse_spec(SPEC), out, cache=CheckpointCache(cache), progress=False)
    return out, CheckpointCache(cache)


def test_one_row_per_cut_and_attack_with_every_metric(bench_dir):
    out, _ = bench_dir
    lines = (out / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    attacks = ("rmle", "inverse-network", "output-oracle", "label-oracle")
    assert {(r["cut"], r["attack"]) for r in rows} == {(c, a) for c in ("conv11", "relu22") for a in attacks}
    for row in rows:
        for key in REQUIRED:
            assert row[key] is not None, key
        assert row["defense"] == "none" and row["strength"] == 0
        assert -1 <= row["ssim"] <= 1 and row["mse"] >= 0
    by_cut = {r["cut"]: r for r in rows}
    assert by_cut["conv11"]["edge_flops"] < by_cut["relu22"]["edge_flops"]


def test_the_train_cell_records_the_trained_models_test_accuracy(bench_dir):
    from splitveil.bench.store import ResultStore
    from splitveil.experiment import train_or_load

    out, cache = bench_dir
    with ResultStore(out) as store:
        recorded = store.cells()["train"].result["test_accuracy"]
    trained = train_or_load(parse_spec(SPEC), cache=cache, progress=False, cached_only=True)
    assert recorded == trained.test_accuracy and 0.1 < recorded <= 1.0


def test_every_row_has_its_floor_and_its_reidentification(bench_dir):
    out, _ = bench_dir
    rows = read_rows(out)
    for cut in ("conv11", "relu22"):
        split = {row.attack: row for row in rows if row.cut == cut}
        assert split["output-oracle"].oracle and split["label-oracle"].oracle
        assert not split["rmle"].oracle and not split["inverse-network"].oracle
        floor = split["output-oracle"].ssim
        strongest = max(split["rmle"].ssim, split["inverse-network"].ssim)
        for row in split.values():
            assert row.oracle_ssim == floor
            assert row.excess_ssim == pytest.approx(strongest - floor)
            # A 256-image slice holds fewer than 100 test images of some class: N is what the pool allows.
            assert 2 <= row.reid_candidates <= 100
            assert 0 <= row.reid_top1 <= row.reid_top5 <= 1
            assert row.reid_distance in ("l2", "ssim", "embedding")


def test_report_embeds_grids_plots_table_and_spec(bench_dir):
    out, _ = bench_dir
    html = (out / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 + 2  # SSIM, MI and re-identification by depth, one grid per cut
    assert 'alt="Re-identification by cut depth"' in html
    assert all(len(image) > 1000 for image in images)
    assert "relu22" in html and "inverse-network" in html and "name: tiny" in html


def test_rerun_skips_finished_cells_and_report_rebuilds(bench_dir):
    out, cache = bench_dir
    before = (out / "results.jsonl").read_text()
    run_bench(parse_spec(SPEC), out, cache=cache, progress=False)
    assert (out / "results.jsonl").read_text() == before
    (out / "report.html").unlink()
    build_report(out)
    assert (out / "report.html").is_file()
    assert len(read_rows(out)) == 8


def test_report_of_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SplitveilError, match="no results.*bench run"):
        build_report(tmp_path)


DEFENDED_SPEC = {
    **SPEC,
    "cuts": ["relu22"],
    "attacks": [{"name": "inverse-network", "options": {"epochs": 1}}],
    "defenses": [
        {"name": "gaussian-noise", "strengths": [0, 0.5, 4.0]},
        {"name": "nopeek", "strengths": [1.0], "epochs": 1},
    ],
}


def test_defense_sweep_gives_a_cell_per_strength_and_a_frontier(tmp_path):
    from splitveil.checkpoint import CheckpointCache

    rows = run_bench(parse_spec(DEFENDED_SPEC), tmp_path / "run", cache=CheckpointCache(tmp_path / "c"), progress=False)
    cells = {(r.defense, r.strength): r for r in rows}
    # Strength 0 is the identity, so it is the undefended cell and not run twice.
    assert set(cells) == {("none", 0.0), ("gaussian-noise", 0.5), ("gaussian-noise", 4.0), ("nopeek", 1.0)}
    assert cells[("gaussian-noise", 4.0)].accuracy < cells[("none", 0.0)].accuracy
    assert cells[("gaussian-noise", 4.0)].mi < cells[("none", 0.0)].mi
    assert cells[("none", 0.0)].privacy_index == 0.0
    assert all(0.0 <= cell.privacy_index <= 1.0 for cell in cells.values())
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Privacy-utility frontiers" in html and 'alt="frontier at relu22"' in html
    assert 'alt="frontier at relu22 (MI)"' in html
    assert "relu22 · nopeek 1" in html  # a reconstruction grid per defense and strength


def test_a_deployment_loads_from_the_run_directory_as_the_bench_evaluated_it(tmp_path):
    from splitveil import load_deployment
    from splitveil.audit import run_attack
    from splitveil.bench.store import ResultStore
    from splitveil.checkpoint import CheckpointCache

    spec = parse_spec({**DEFENDED_SPEC, "defenses": [DEFENDED_SPEC["defenses"][1]]})
    spec = spec.model_copy(
        update={"attacks": [spec.attacks[0].model_copy(update={"name": "rmle", "options": {"steps": 10}})]}
    )
    cache = CheckpointCache(tmp_path / "c")
    run_bench(spec, tmp_path / "run", cache=cache, progress=False)
    with ResultStore(tmp_path / "run") as store:
        cells = store.cells()
    attack_id = next(cell for cell in cells if cell.startswith("attack/") and "__nopeek__" in cell)

    deployment = load_deployment(tmp_path / "run", "deploy/relu22/nopeek/1", cache=cache, measure=True)
    assert deployment.deployed.accuracy == cells["deploy/relu22/nopeek/1"].result["accuracy"]
    assert deployment.strength == 1.0 and deployment.defense_spec.name == "nopeek"

    split = load_deployment(tmp_path / "run", attack_id, cache=cache).deployed.split  # an attack cell: its split
    targets = deployment.trained.data.test.take(spec.audit.targets)
    again = run_attack(
        split, spec.attacks[0], data=deployment.trained.data, targets=targets, evaluator=None, seed=0, progress=False
    )
    assert again.ssim == pytest.approx(cells[attack_id].result["ssim"], abs=1e-6)

    with pytest.raises(
        SplitveilError,
        match="has no cell .deploy/relu22/nopeek/9.; its deploy cells are: deploy/relu22/none/0, deploy/relu22/nopeek/1",
    ):
        load_deployment(tmp_path / "run", "deploy/relu22/nopeek/9", cache=cache)
    with pytest.raises(SplitveilError, match="the trained model is not in the checkpoint cache at .*empty"):
        load_deployment(tmp_path / "run", "deploy/relu22/nopeek/1", cache=CheckpointCache(tmp_path / "empty"))


SALTED_SPEC = {
    **SPEC,
    "cuts": ["relu22"],
    "attacks": [{"name": "inverse-network", "options": {"epochs": 1}}],
    "defenses": [{"name": "salted", "strengths": [0.5], "options": {"salt_at": "relu11"}, "epochs": 1}],
    "audit": {**SPEC["audit"], "output": {"enabled": True, "observe": ["logits", "both"], "targets": 32, "epochs": 2}},
}


def test_salted_sweep_reports_output_privacy_per_observation(tmp_path):
    from splitveil.checkpoint import CheckpointCache

    rows = run_bench(parse_spec(SALTED_SPEC), tmp_path / "run", cache=CheckpointCache(tmp_path / "c"), progress=False)
    cells = {(r.defense, r.strength): r for r in rows}
    assert set(cells) == {("none", 0.0), ("salted", 0.5)}
    for cell in cells.values():
        assert set(cell.output_privacy) == {"logits", "both"}
        figures = cell.output_privacy["logits"]
        assert 0 <= figures["label_accuracy"] <= 1 and figures["label_chance"] == pytest.approx(0.1)
    assert cells[("none", 0.0)].output_privacy["logits"]["salt_accuracy"] is None
    assert cells[("salted", 0.5)].output_privacy["logits"]["salt_chance"] == pytest.approx(0.1)
    assert cells[("salted", 0.5)].edge_flops > cells[("none", 0.0)].edge_flops
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Output privacy" in html and "salt chance" in html


def test_frontier_table_lists_every_attack_beside_the_strongest(bench_dir):
    from splitveil.bench.tables import as_markdown, frontier_table

    out, _ = bench_dir
    rows = read_rows(out)
    header, lines = frontier_table(rows)
    assert header[5:7] == ["SSIM rmle", "SSIM inverse-network"] and "max SSIM" in header
    assert [line[0] for line in lines] == ["conv11", "relu22"]
    for line in lines:
        assert float(line[header.index("max SSIM")]) == max(float(line[5]), float(line[6]))
        assert line[header.index("loss (pts)")] == "0.00"  # undefended against itself
    assert as_markdown(header, lines).count("\n") == len(lines) + 1


def test_bench_frontier_command_prints_markdown(bench_dir):
    from typer.testing import CliRunner

    from splitveil.cli import app

    out, _ = bench_dir
    result = CliRunner().invoke(app, ["bench", "frontier", str(out), "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("| cut | defense |") and "| relu22 | none |" in result.output


def test_cost_table_shows_serving_latency_where_measured(bench_dir):
    from splitveil.bench.provenance import cost_table

    out, _ = bench_dir
    figures = {"cut": "relu22", "defense": "none", "strength": 0.0, "round_trip": {"float32": {"p50_ms": 1.23}}}
    (out / "serving-relu22.json").write_text(json.dumps(figures))
    (out / "serving-broken.json").write_text("{not json")
    try:
        latency = {(line["cut"], line["defense"]): line["latency_ms"] for line in cost_table(out, read_rows(out))}
    finally:
        (out / "serving-relu22.json").unlink()
        (out / "serving-broken.json").unlink()
    assert latency == {("conv11", "none"): None, ("relu22", "none"): 1.23}
