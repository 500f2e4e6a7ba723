"""``splitveil export --int8`` and ``splitveil bench edge`` through the real entry point, on a tiny spec."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import pytest

from splitveil.cli import main
from splitveil.perf.edge_runtimes import FIGURES_FILE, RUNTIMES, TABLE_FILE

TINY_SPEC = """
name: tiny-edge
data: {name: fashion-mnist, limit: 128}
model: {name: he-cnn, options: {widths: [4, 8, 8], hidden: 16}}
train: {epochs: 1, batch_size: 64}
cuts: [relu22]
"""


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def _splitveil(*args: str) -> tuple[int, str, str]:
    """``splitveil ARGS`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue(), err.getvalue()


def test_int8_without_onnx_is_one_line_that_names_the_fix(tmp_path) -> None:
    cache = tmp_path / "cache"
    code, _, stderr = _splitveil(
        "export", "missing.yaml", "--cut", "relu22", "--out", str(tmp_path / "b"), "--int8", "--cache-dir", str(cache)
    )
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "--int8" in lines[0] and "add --onnx" in lines[0]
    assert not cache.exists(), "nothing may be trained before the flags are checked"


def test_export_int8_writes_the_quantised_edge_and_reports_it(tiny_spec, tmp_path) -> None:
    out = tmp_path / "bundle"
    args = ["export", str(tiny_spec), "--cut", "relu22", "--out", str(out), "--onnx", "--int8"]
    code, stdout, stderr = _splitveil(*args, "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 0, stderr
    assert (out / "edge.int8.onnx").is_file() and (out / "edge.onnx").is_file()
    line = next(line for line in stdout.splitlines() if line.startswith("int8: "))
    assert "edge.int8.onnx" in line and "smaller" in line and "accuracy" in line and "vs float32" in line


def test_bench_edge_measures_every_runtime_and_writes_its_table(tiny_spec, tmp_path) -> None:
    out = tmp_path / "edge-bench"
    code, stdout, stderr = _splitveil(
        *("bench", "edge", str(tiny_spec), "--cut", "relu22", "--out", str(out)),
        *("--latency-images", "8", "--rounds", "2", "--accuracy-images", "20"),
        *("--cache-dir", str(tmp_path / "c"), "--no-progress", "--markdown"),
    )
    assert code == 0, stderr
    document = json.loads((out / FIGURES_FILE).read_text())
    rows = document["rows"]
    assert [row["runtime"] for row in rows] == list(RUNTIMES)
    assert document["settings"]["rounds"] == 2 and document["machine"]["cpus"] >= 1
    for row in rows:
        assert row["deployment"] == "relu22" and row["defense"] == "none"
        assert row["latency_images"] == 8 and row["accuracy_images"] == 20  # 4 per round, two rounds
        for figure in ("p50_ms", "p99_ms", "peak_rss_mib", "file_bytes", "latency_vs_fp32", "size_vs_fp32"):
            assert math.isfinite(row[figure]) and row[figure] > 0, (row["runtime"], figure)
        assert row["p99_ms"] >= row["p50_ms"] and row["peak_rss_mib"] >= row["rss_before_runtime_mib"] > 0
        assert 0 <= row["accuracy"] <= 1
    fp32 = rows[1]
    assert fp32["latency_vs_fp32"] == fp32["size_vs_fp32"] == 1 and fp32["accuracy_vs_fp32_points"] == 0
    with (out / TABLE_FILE).open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["runtime"] for row in table] == list(RUNTIMES) and "size_vs_fp32" in table[0]
    assert (out / "bundles" / "relu22" / "edge.int8.onnx").is_file()
    assert "| onnx-int8 |" in stdout and "size / fp32" in stdout
