"""The CLI through its real entry point: one-line errors, exit code 2, JSON output."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from splitveil.cli import app


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "splitveil.cli", *args], capture_output=True, text=True, env=env)


def test_models_json_lists_models_with_cut_costs():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    catalog = json.loads(result.output)
    assert len(catalog) >= 4
    for entry in catalog:
        assert len(entry["cuts"]) >= 3
        for row in entry["cuts"]:
            assert row["feature_bytes"] > 0 and row["edge_flops"] > 0 and row["feature_shape"]


def test_profile_prints_a_table():
    result = CliRunner().invoke(app, ["profile", "resnet8", "--input-shape", "3,32,32"])
    assert result.exit_code == 0, result.output
    assert "layer2.0" in result.output and "bytes/sample" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["profile", "alexnet"], "unknown model 'alexnet'"),
        (
            ["train", "--model", "he-cnn", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent-dir"],
            "/nonexistent-dir",
        ),
        (["train", "--epochs", "0"], "train.epochs"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
    result = run_cli(*args, "--out", str(tmp_path)) if args[0] == "train" else run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr


def test_unknown_spec_key_from_a_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  epoch: 3\n")
    result = run_cli("train", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unknown key 'train.epoch'" in result.stderr and "Traceback" not in result.stderr


def test_bad_input_shape_option():
    result = CliRunner().invoke(app, ["models", "--input-shape", "28,28"])
    assert result.exit_code != 0 and "C,H,W" in result.output


TINY_SPEC = """
name: tiny
data: {name: fashion-mnist, limit: 128}
model: {name: he-cnn, options: {widths: [4, 8, 8], hidden: 16}}
train: {epochs: 1, batch_size: 64}
cuts: [conv11]
attacks:
  - {name: rmle, options: {steps: 5}}
audit: {targets: 4, grid_images: 2, mine: {samples: 64, steps: 5}, evaluator: {epochs: 1}}
"""


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def _attack_args(spec, tmp_path, options: str) -> list[str]:
    """``splitveil attack SPEC`` with ``options`` (split on spaces), a private cache and no progress bars."""
    return ["attack", str(spec), *options.split(), "--cache-dir", str(tmp_path / "c"), "--no-progress"]


def test_attack_command_saves_a_grid(tiny_spec, tmp_path):
    png = tmp_path / "grid.png"
    args = _attack_args(tiny_spec, tmp_path, f"--cut conv11 --attack rmle --set steps=5 --targets 4 --out {png}")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "SSIM" in result.output and png.read_bytes()[:4] == b"\x89PNG"


def test_attack_command_rejects_unknown_attack_option(tiny_spec, tmp_path):
    png = tmp_path / "g.png"
    result = run_cli(*_attack_args(tiny_spec, tmp_path, f"--cut conv11 --attack rmle --set stpes=5 --out {png}"))
    assert result.returncode == 2 and "stpes" in result.stderr and "steps" in result.stderr


def test_invalid_cut_fails_before_training(tiny_spec, tmp_path):
    result = run_cli(*_attack_args(tiny_spec, tmp_path, "--cut relu99 --attack rmle"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1
    assert "unknown cut 'relu99'" in lines[0] and "conv11" in lines[0]
    assert not (tmp_path / "c").exists(), "nothing may be trained for an invalid cut"


def test_bench_run_and_report_commands(tiny_spec, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        app, ["bench", "run", str(tiny_spec), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "1 result rows" in result.output and (out / "report.html").is_file()
    (out / "report.html").unlink()
    assert runner.invoke(app, ["bench", "report", str(out)]).exit_code == 0
    assert (out / "report.html").is_file()
    status = runner.invoke(app, ["bench", "status", str(out)])
    assert status.exit_code == 0, status.output
    assert "complete: every cell is done" in status.output
    assert re.search(r"attack\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*0", status.output), status.output


def test_bench_status_of_a_directory_that_is_not_a_run(tmp_path):
    result = run_cli("bench", "status", str(tmp_path))
    assert result.returncode != 0 and "is not a bench run directory" in result.stderr


def test_bench_rmle_batching_command(tiny_spec, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "rmle-batching",
            str(tiny_spec),
            "--cut",
            "conv11",
            "--images",
            "2",
            "--steps",
            "3",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "speed-up" in result.output and "conv11" in result.output


def test_plan_command_writes_the_plan_and_names_the_choice(tmp_path):
    import yaml

    spec = {
        "data": {"name": "fashion-mnist", "limit": 128},
        "public": {"name": "mnist-5k", "limit": 128},
        "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 16}},
        "public_train": {"epochs": 1},
        "layers": ["relu12"],
        "channels": [2],
        "selections": ["random"],
        "cloud_train": {"epochs": 1},
        "attack": {"name": "inverse-network", "options": {"epochs": 1}},
        "verify_attack": {"name": "inverse-network", "options": {"epochs": 1}},
        "targets": 4,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ["plan", str(path), "--out", str(tmp_path / "out"), "--max-ssim", "0.99", "--cache-dir", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "chosen: relu12, 2 channels (random)" in result.output and "PrivyNet candidates" in result.output
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["constraints"]["max_ssim"] == 0.99
    # A changed limit re-plans from the measured candidates; none fits an edge of 10 FLOPs.
    again = CliRunner().invoke(app, [*args, "--max-edge-flops", "10", "--no-progress"])
    assert again.exit_code == 1 and "reusing 1 candidates" in again.output and "no topology" in again.output


def test_plan_with_an_unknown_constraint_is_one_clear_line(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("layers: [relu12]\nchannels: [2]\nconstraints: {max_flops: 10}\n")
    result = run_cli("plan", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unknown key 'constraints.max_flops'" in result.stderr and "max_edge_flops" in result.stderr


def test_bench_run_can_run_one_cut_of_a_spec(tiny_spec, tmp_path):
    out = tmp_path / "run"
    args = ["bench", "run", str(tiny_spec), "--out", str(out), "--cut", "relu22", "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {row["cut"] for row in rows} == {"relu22"}  # instead of the spec's conv11
    assert "- relu22" in (out / "spec.resolved.yaml").read_text()


def test_bench_run_of_a_malformed_spec_names_the_key_and_records_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(TINY_SPEC.replace("attacks:", "atacks:"))
    out = tmp_path / "run"
    result = run_cli("bench", "run", str(spec), "--out", str(out), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 2 and "atacks" in result.stderr
    assert not out.exists() and not (tmp_path / "c").exists()
