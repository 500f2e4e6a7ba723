"""The CLI through its real entry point: one-line errors, exit code 2, JSON output."""

import contextlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from splitveil.cli import app, main
from splitveil.errors import ConfigError


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "splitveil.cli", *args], capture_output=True, text=True, env=env)


def run_main(*args: str) -> tuple[int, str, str]:
    """``splitveil ARGS`` through the real entry point (``main``), in this process: exit code, stdout, stderr.

    An exception other than the ``SystemExit`` that ``main`` always ends with escapes, failing the test:
    it is the traceback a user would have seen.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue(), err.getvalue()


def assert_one_line_refusal(args: list[str], *expected: str) -> str:
    """``splitveil ARGS`` is refused with exit code 2 and one ``error:`` line holding every ``expected``."""
    code, _, stderr = run_main(*args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


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
    assert (tmp_path / "out" / "study.db").is_file()  # the search engine's study, shared with `splitveil tune`
    # A changed limit re-plans from the study's measured topologies; none fits an edge of 10 FLOPs.
    again = CliRunner().invoke(app, [*args, "--max-edge-flops", "10", "--no-progress"])
    assert again.exit_code == 1 and "reusing 1 measured topologies" in again.output and "no topology" in again.output


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


# Issue 18, defect 5: numbers validated at the CLI (`serve --port 70000` used to listen on 4464).
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "70000"),
        ("--port", "-1"),
        ("--port", "0"),
        ("--max-batch", "0"),
        ("--threads", "0"),
        ("--max-request-samples", "0"),
        ("--drain-timeout", "-1"),
        ("--max-wait-ms", "-1"),
    ],
)
def test_serve_refuses_numbers_out_of_range(option, value, tmp_path):
    assert_one_line_refusal(
        ["serve", "--checkpoint", str(tmp_path), option, value],
        f"Invalid value for '{option}'",
        "splitveil serve --help",
    )


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_infer_refuses_a_timeout_that_is_not_a_positive_number(value, tmp_path):
    args = ["infer", str(tmp_path / "a.png"), "--checkpoint", str(tmp_path), "--url", "http://127.0.0.1:9"]
    assert_one_line_refusal([*args, "--timeout", value], "Invalid value for '--timeout'", "seconds above 0")


# Issue 18, defect 7: token, certificate and key files missing, a directory, binary or not PEM.
@pytest.fixture
def odd_files(tmp_path):
    files = {"missing": tmp_path / "missing", "directory": tmp_path / "dir", "binary": tmp_path / "bin"}
    files["directory"].mkdir()
    files["binary"].write_bytes(b"\x00\xff\xfe token")
    files["huge"] = tmp_path / "huge"
    files["huge"].write_bytes(b"a" * ((1 << 20) + 1))
    files["text"] = tmp_path / "text.txt"
    files["text"].write_text("not a certificate\n")
    files["fake_pem"] = tmp_path / "fake.pem"
    files["fake_pem"].write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    return files


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("binary", "is not a text file"),
        ("huge", "larger than 1 MiB"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "infer"])
def test_token_files_that_cannot_hold_tokens_are_refused(command, kind, expected, odd_files, tmp_path):
    if command == "serve":
        args = ["serve", "--checkpoint", str(tmp_path), "--tokens-file", str(odd_files[kind])]
    else:
        args = [
            "infer",
            "a.png",
            "--checkpoint",
            str(tmp_path),
            "--url",
            "http://x",
            "--token-file",
            str(odd_files[kind]),
        ]
    assert_one_line_refusal(args, "-file'", expected)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--cert", "{missing}", "--key", "{text}"], "does not exist"),
        (["--cert", "{directory}"], "is a directory"),
        (["--cert", "{text}", "--key", "{text}"], "is not a PEM file"),
        (["--cert", "{binary}"], "is not a PEM file"),
        (["--cert", "{fake_pem}", "--key", "{fake_pem}"], "do not load as a certificate and its private key"),
        (["--key", "{fake_pem}"], "HTTPS needs both --cert CERT.pem and --key KEY.pem"),
    ],
)
def test_serve_refuses_tls_files_that_are_not_a_certificate_and_key(options, expected, odd_files, tmp_path):
    named = [option.format(**odd_files) for option in options]
    assert_one_line_refusal(["serve", "--checkpoint", str(tmp_path), "--no-auth", *named], expected)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("text", "is not a PEM file"),
        ("fake_pem", "--ca-cert"),
    ],
)
def test_infer_refuses_a_ca_certificate_that_is_not_one(kind, expected, odd_files, tmp_path):
    args = ["infer", "a.png", "--checkpoint", str(tmp_path), "--url", "https://x", "--ca-cert", str(odd_files[kind])]
    assert_one_line_refusal(args, expected)


def test_export_refuses_an_out_that_is_a_file_before_training(tmp_path):
    existing = tmp_path / "bundle"
    existing.write_text("not a directory")
    spec = tmp_path / "missing-spec.yaml"  # never read: --out is checked first
    args = ["export", str(spec), "--cut", "relu22", "--cache-dir", str(tmp_path / "c")]
    assert_one_line_refusal([*args, "--out", str(existing)], "is an existing file, not a directory")
    assert_one_line_refusal([*args, "--out", str(existing / "sub")], f"lies under {existing}, which is a file")
    assert not (tmp_path / "c").exists()


def test_export_onnx_writes_verified_halves_beside_the_bundle(tiny_spec, tmp_path):
    out = tmp_path / "bundle"
    args = ["export", str(tiny_spec), "--cut", "conv11", "--out", str(out), "--onnx"]
    code, stdout, stderr = run_main(*args, "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 0, stderr
    assert (out / "edge.onnx").is_file() and (out / "cloud.onnx").is_file() and (out / "edge").is_dir()
    assert "onnx: edge.onnx and cloud.onnx" in stdout and "verified against torch" in stdout


@pytest.mark.parametrize("command", ["train", "plan"])
def test_directory_outputs_refuse_an_existing_file(command, tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("x")
    assert_one_line_refusal([command, "spec.yaml", "--out", str(existing)], "Invalid value for '--out'", "is a file")


ONE_RESULT_ROW = {
    **{"model": "he-cnn", "dataset": "fashion-mnist", "cut": "conv11", "cut_index": 0, "defense": "none"},
    **{"strength": 0.0, "attack": "rmle", "seed": 0, "accuracy": 0.5, "ssim": 0.5, "psnr": 10.0, "mse": 0.1},
    **{"mi": None, "privacy_accuracy": None, "edge_flops": 1, "cloud_flops": 1, "edge_params": 1},
    **{"feature_shape": [1], "feature_bytes": 4, "targets": 1, "seconds": 1.0, "reconstruction_file": "r.safetensors"},
}


def test_a_corrupt_results_store_is_one_line_for_every_bench_command(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    (tmp_path / "spec.resolved.yaml").write_text(TINY_SPEC)
    assert_one_line_refusal(["bench", "status", str(tmp_path)], "cannot read the results store", ".recover")
    assert_one_line_refusal(["bench", "report", str(tmp_path)], "no results in")  # nothing to report: the rows are gone
    (tmp_path / "results.jsonl").write_text(json.dumps(ONE_RESULT_ROW) + "\n")
    assert_one_line_refusal(["bench", "report", str(tmp_path)], "cannot read the results store", ".recover")
    code, stdout, _ = run_main("bench", "frontier", str(tmp_path))  # the frontier needs only results.jsonl
    assert code == 0 and "conv11" in stdout


def test_bench_run_onto_a_corrupt_store_is_one_line(tiny_spec, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"not a database at all" * 100)
    args = ["bench", "run", str(tiny_spec), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert_one_line_refusal(args, "cannot read the results store", "new --out")
    assert not (tmp_path / "c").exists()


def test_rich_markup_in_a_message_is_printed_as_text(tmp_path):
    assert_one_line_refusal(["bench", "status", str(tmp_path / "[/bold]")], "[/bold] is not a bench run directory")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("1,100000,100000", "too large for the zoo's small-image models"),
        ("65,28,28", "at most 64 channels"),
        ("1,4,4", "cannot take inputs of shape 1,4,4"),
    ],
)
def test_models_refuses_input_shapes_it_cannot_build(shape, expected):
    assert_one_line_refusal(["models", "--input-shape", shape], expected)


def test_profile_refuses_a_non_positive_class_count():
    assert_one_line_refusal(["profile", "lenet", "--num-classes", "0"], "Invalid value for '--num-classes'")


# Issue 18, defect 6 and issue 19, criterion 3 through the CLI: a bad option of every component kind
# (attack, model, defense, dataset, metric, evaluator) is refused when the spec loads, before any training.
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("options: {steps: 5}", "options: {stpes: 5}"), "attack 'rmle' has no option 'stpes'"),
        (("options: {steps: 5}", "options: {steps: five}"), "option steps='five' is invalid"),
        (("hidden: 16", "hiden: 16"), "model 'he-cnn' has no option 'hiden'"),
        (
            (
                "cuts: [conv11]",
                "cuts: [conv11]\ndefenses: [{name: gaussian-noise, strengths: [1], options: {wher: input}}]",
            ),
            "defense 'gaussian-noise' has no option 'wher'",
        ),
        (
            (
                "cuts: [conv11]",
                "cuts: [conv11]\ndefenses: [{name: gaussian-noise, strengths: [1], options: {where: 3}}]",
            ),
            "option where=3 is invalid",
        ),
        (("limit: 128", "limt: 128"), "unknown key 'data.limt'"),
        (("name: fashion-mnist", "name: fashion-mnsit"), "unknown dataset 'fashion-mnsit'"),
        (("steps: 5}, evaluator", "steps: 5, options: {hiden: 8}}, evaluator"), "MINE has no option 'hiden'"),
        (("evaluator: {epochs: 1}", "evaluator: {epocs: 1}"), "unknown key 'audit.evaluator.epocs'"),
    ],
)
def test_bench_run_refuses_bad_component_options_before_anything_runs(edit, expected, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(TINY_SPEC.replace(*edit))
    out = tmp_path / "run"
    args = ["bench", "run", str(spec), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert_one_line_refusal(args, expected)
    assert not out.exists() and not (tmp_path / "c").exists()


def test_an_empty_spec_is_refused_by_the_cli(tmp_path):
    spec = tmp_path / "empty.yaml"
    spec.write_text("")
    assert_one_line_refusal(["bench", "run", str(spec), "--out", str(tmp_path / "run")], "is empty")


def test_bench_run_dry_run_lists_the_cells_and_runs_nothing(tiny_spec, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_main("bench", "run", str(tiny_spec), "--out", str(out), "--dry-run")
    assert code == 0, stderr
    assert "tiny: 4 cells (1 train, 1 evaluator, 1 deploy, 1 attack) at 1 cut(s): conv11; nothing was run" in stdout
    assert not out.exists()
    no_cuts = tmp_path / "no-cuts.yaml"
    no_cuts.write_text(TINY_SPEC.replace("cuts: [conv11]\n", ""))
    code, stdout, _ = run_main("bench", "run", str(no_cuts), "--out", str(out), "--dry-run")
    assert code == 0 and "at 17 cut(s): conv11, relu11," in stdout  # omitted cuts: every cut of he-cnn


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [("steps=[1", "is not valid YAML"), ("seed=1", "option 'seed' cannot be set here"), ("steps", "KEY=VALUE")],
)
def test_attack_refuses_bad_set_options_before_training(assignment, expected, tiny_spec, tmp_path):
    args = ["attack", str(tiny_spec), "--cut", "conv11", "--attack", "rmle", "--cache-dir", str(tmp_path / "c")]
    assert_one_line_refusal([*args, "--set", assignment], expected)
    assert not (tmp_path / "c").exists()


# Issue 18, defect 7: infer inputs that are not images (splitveil.edge.images checks the .npy header).
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("object", "not pixels|Object arrays cannot be loaded"),
        ("truncated", "truncated"),
        ("huge_header", "truncated"),  # checked against the file's size from the header: nothing allocated
        ("garbage", "not a NumPy .npy file"),
        ("empty", "holds no images"),
    ],
)
def test_infer_names_an_image_file_it_cannot_read(kind, expected, tmp_path):
    from numpy.lib import format as npy_format

    from splitveil.edge.images import read_image_files

    path = tmp_path / f"{kind}.npy"
    if kind == "object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "truncated":
        np.save(path, np.zeros((2, 1, 12, 12), np.float32))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "huge_header":
        with path.open("wb") as handle:  # declares 10^12 images and holds 64 bytes
            npy_format.write_array_header_1_0(
                handle, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 1, 12, 12)}
            )
            handle.write(bytes(64))
    elif kind == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    else:
        np.save(path, np.zeros((0, 1, 12, 12), np.float32))
    with pytest.raises(ConfigError) as info:
        read_image_files([path], (1, 12, 12))
    message = str(info.value)
    assert str(path) in message and re.search(expected, message) and "\n" not in message
