"""The executors end to end on a small real spec: local pool vs a Ray cluster, a SIGKILL mid-run, bad input."""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from splitveil.bench import run_bench
from splitveil.checkpoint import CheckpointCache
from splitveil.config import parse_spec
from splitveil.errors import ConfigError, SplitveilError
from splitveil.serve.process import free_port

pytestmark = pytest.mark.slow

SPEC = {
    "name": "executors",
    "seed": 3,
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["conv11", "relu22"],
    "attacks": [{"name": "rmle", "options": {"steps": 150}}, {"name": "inverse-network", "options": {"epochs": 1}}],
    "defenses": [{"name": "gaussian-noise", "strengths": [0.5]}],
    "audit": {"targets": 8, "grid_images": 4, "mine": {"samples": 128, "steps": 20}, "evaluator": {"epochs": 1}},
}
METRICS = ("accuracy", "ssim", "psnr", "mse", "mi", "privacy_accuracy", "privacy_index", "edge_flops")
CELLS = 1 + 1 + 4 + 8  # train, evaluator, 2 cuts x 2 variants, x 2 attacks


def _rows(directory: Path) -> dict[tuple, dict]:
    rows = [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]
    return {(r["cut"], r["defense"], r["strength"], r["attack"]): r for r in rows}


def _events(directory: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(directory / "results.sqlite") as db:
        return db.execute("SELECT run, cell, event FROM events ORDER BY seq").fetchall()


def test_local_and_ray_give_the_same_cells_and_metrics(tmp_path, ray_cluster):
    spec = parse_spec(SPEC)
    run_bench(spec, tmp_path / "local", cache=CheckpointCache(tmp_path / "c1"), progress=False, workers=2)
    options = {"executor": "ray", "address": ray_cluster}
    run_bench(spec, tmp_path / "ray", cache=CheckpointCache(tmp_path / "c2"), progress=False, **options)
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(local) == set(remote) and len(local) == 8
    for key, row in local.items():
        assert {m: row[m] for m in METRICS} == {m: remote[key][m] for m in METRICS}, key


def test_a_run_killed_mid_way_resumes_and_computes_each_cell_once(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "splitveil.cli", "bench", "run", str(spec_file), "--out", str(out),
               "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--no-progress"]  # fmt: skip
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        try:
            done = [cell for _, cell, event in _events(out) if event == "done"]
        except sqlite3.OperationalError:  # the store is being created
            done = []
        if sum(cell.startswith("attack/") for cell in done) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, "the run finished before it could be killed: make its cells longer"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its workers, mid-way
    first.wait()
    before = {cell for _, cell, event in _events(out) if event == "done"}
    assert 4 <= len(before) < CELLS

    subprocess.run(command, check=True, capture_output=True, timeout=600)
    events = _events(out)
    done = Counter(cell for _, cell, event in events if event == "done")
    assert len(done) == CELLS and set(done.values()) == {1}  # every cell exactly once
    second_run = max(run for run, _, _ in events)
    restarted = {cell for run, cell, event in events if run == second_run and event == "started"}
    assert not restarted & before  # nothing finished before the kill was computed again
    assert len(_rows(out)) == 8


def test_an_unreachable_ray_address_is_a_clear_error(tmp_path):
    port = free_port()
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at 127.0.0.1:{port}.*ray start --head"):
        run_bench(parse_spec(SPEC), tmp_path / "run", progress=False, executor="ray", address=f"127.0.0.1:{port}")


def test_a_full_disk_while_writing_records_nothing_as_done(tmp_path, monkeypatch):
    spec, cache = parse_spec({**SPEC, "cuts": ["relu22"], "defenses": []}), CheckpointCache(tmp_path / "c")
    real_open = Path.open

    def full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if path.name.endswith(".safetensors.partial"):  # an attack's reconstructions, written by the driver

            def no_space(data):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            handle.write = no_space
        return handle

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(SplitveilError, match=r"2 cell\(s\) failed.*No space left on device"):
        run_bench(spec, tmp_path / "run", cache=cache, progress=False, workers=1)
    assert (tmp_path / "run" / "results.jsonl").read_text() == ""  # no attack recorded as done
    failed = [cell for _, cell, event in _events(tmp_path / "run") if event == "failed"]
    assert len(failed) == 2 and all(cell.startswith("attack/") for cell in failed)

    assert not list((tmp_path / "run").rglob("*.partial"))  # nothing half-written left behind
    monkeypatch.setattr(Path, "open", real_open)  # space freed: the same command finishes the run
    rows = run_bench(spec, tmp_path / "run", cache=cache, progress=False, workers=1)
    assert len(rows) == 2


def test_unknown_executor_and_misplaced_options_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        run_bench(parse_spec(SPEC), tmp_path / "a", progress=False, executor="slurm")
    with pytest.raises(ConfigError, match="--workers is for --executor local"):
        run_bench(parse_spec(SPEC), tmp_path / "b", progress=False, executor="ray", workers=2)


def test_scaling_times_each_configuration_from_scratch():
    from splitveil.perf.scaling import time_workers

    small = parse_spec({**SPEC, "cuts": ["relu22"], "defenses": [], "attacks": SPEC["attacks"][:1]})
    points = time_workers(small, [(1, 1), (2, None)])
    assert [(p.workers, p.threads) for p in points] == [(1, 1), (2, 1)]  # one thread per cell by default
    assert all(p.rows == 1 and p.seconds > 0 for p in points)
