"""The CLI through its real entry point: one-line errors, exit code 2, JSON output."""

import json
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
        (["train", "--model", "he-cnn", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent-dir"], "/nonexistent-dir"),
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
