"""`splitveil tune` end to end on small real data: the study, its re-measurement, the report, the
bundle, and a SIGKILL mid-study."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
import yaml

from splitveil.checkpoint import CheckpointCache
from splitveil.serve.bundle import load_half
from splitveil.tune import TuneSpec, run_tune
from splitveil.tune.engine import STUDY_FILE, counted_trials
from splitveil.tune.study import STUDY_NAME

pytestmark = pytest.mark.slow

SPEC = {
    "name": "tiny-tune",
    "seed": 0,
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["conv11", "relu22"],
    "attacks": [
        {"name": "inverse-network", "options": {"epochs": 1}},
        {"name": "output-oracle", "options": {"epochs": 1}},
    ],
    "audit": {
        "targets": 8,
        "grid_images": 4,
        "mine": {"enabled": False},
        "evaluator": {"epochs": 1},
        "reid": {"candidates": 4},
    },
    "tune": {
        "trials": 3,
        "parallel": 1,
        "budget": {"max_accuracy_drop": 50},
        "candidates": [
            {"name": "bounded-noise", "epochs": 1, "search": {"strength": {"low": 0.1, "high": 2.0, "log": True}}},
            {
                "name": "feature-dropout",
                "retrain": True,
                "epochs": 1,
                "search": {"strength": {"low": 0.1, "high": 0.8}},
            },
        ],
        "verify": {
            "attacks": [
                {"name": "inverse-network", "options": {"epochs": 2}},
                {"name": "output-oracle", "options": {"epochs": 1}},
            ],
            "attack_seeds": [11, 12],
            "points": 2,
            "targets": 12,
        },
    },
}


def _study(out):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY_FILE}")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    lines: list[str] = []
    result = run_tune(
        TuneSpec.model_validate(SPEC),
        root / "run",
        cache=CheckpointCache(root / "cache"),
        progress=False,
        workers=2,
        export=root / "bundle",
        report=lines.append,
    )
    return root, result, lines


def test_every_trial_is_measured_and_reported(tuned):
    root, result, lines = tuned
    document = json.loads((root / "run" / "tune.json").read_text())
    assert len(document["trials"]) == 3 and len(lines) == 3
    for row in document["trials"]:
        assert 0 <= row["reid_top1"] <= 1 and row["excess_ssim"] is not None and row["cut"] in ("conv11", "relu22")
        assert row["feasible"]  # the budget admits every accuracy here
    assert set(document["pareto"]) <= {row["trial"] for row in document["trials"]} and document["pareto"]
    assert (root / "run" / "tune.html").read_text().count("<tr") >= 4
    assert (root / "run" / "report.html").is_file()


def test_the_pareto_front_is_non_dominated(tuned):
    _, result, _ = tuned
    outcome = result.outcome

    def dominates(a, b):
        fa, fb = a.figures, b.figures
        better_or_equal = (
            fa.accuracy >= fb.accuracy and fa.reid_top1 <= fb.reid_top1 and fa.excess_ssim <= fb.excess_ssim
        )
        strictly = fa.accuracy > fb.accuracy or fa.reid_top1 < fb.reid_top1 or fa.excess_ssim < fb.excess_ssim
        return better_or_equal and strictly

    front = [t for t in outcome.trials if t.number in outcome.pareto]
    rest = [t for t in outcome.trials if t.number not in outcome.pareto]
    assert not any(dominates(a, b) for a in outcome.trials for b in front)
    assert all(any(dominates(a, b) for a in front) for b in rest)


def test_the_pareto_points_are_remeasured_at_each_fresh_seed_and_the_most_private_is_chosen(tuned):
    root, result, _ = tuned
    outcome = result.outcome
    assert outcome.verified and all(set(point.by_seed) == {11, 12} for point in outcome.verified)
    for seed in (11, 12):
        resolved = yaml.safe_load((root / "run" / "verify" / f"seed-{seed}" / "spec.resolved.yaml").read_text())
        assert resolved["audit"]["attack_seed"] == seed and resolved["seed"] == 0  # same deployment, new attackers
        assert resolved["audit"]["targets"] == 12  # more targets than the search's 8: finer re-identification
    chosen = outcome.chosen
    key = (chosen.strongest("reid_top1"), chosen.strongest("excess_ssim"))
    assert all(key <= (p.strongest("reid_top1"), p.strongest("excess_ssim")) for p in outcome.verified)
    assert f"at {chosen.trial.point.cut}" in outcome.recommendation and "fresh attacker seed" in outcome.recommendation
    assert "2 attacks (inverse-network, output-oracle)" in outcome.recommendation


def test_the_chosen_point_is_exported_as_a_bundle_serve_loads(tuned):
    root, result, _ = tuned
    point = result.outcome.chosen.trial.point
    edge = load_half(root / "bundle" / "edge", "edge")
    assert edge.metadata["cut"] == point.cut
    assert yaml.safe_load((root / "bundle" / "tuned-spec.yaml").read_text())["defenses"][0]["label"] == point.label


def test_a_run_again_counts_the_finished_trials_and_computes_nothing(tuned):
    root, _, _ = tuned
    spec = TuneSpec.model_validate(SPEC)
    lines: list[str] = []
    run_tune(
        spec,
        root / "run",
        cache=CheckpointCache(root / "cache"),
        progress=False,
        workers=1,
        verify=False,
        report=lines.append,
    )
    assert lines == [] and len(_study(root / "run").trials) == 3


BASELINES = [
    {"name": "gaussian-noise", "retrain": True, "epochs": 1, "strengths": [0.25]},
    {"name": "feature-dropout", "retrain": True, "epochs": 1, "strengths": [0.2, 0.6]},
]


def test_baselines_added_to_a_finished_study_join_its_front_without_rerunning_a_trial(tuned, tmp_path):
    root, first, _ = tuned
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    trial_cells = _done_cells(out)
    spec = TuneSpec.model_validate({**SPEC, "tune": {**SPEC["tune"], "baselines": BASELINES}})
    lines: list[str] = []
    result = run_tune(spec, out, cache=CheckpointCache(root / "cache"), progress=False, workers=2, report=lines.append)
    outcome = result.outcome

    assert [(t.params, t.values) for t in _study(out).trials] == [
        (t.params, t.values) for t in _study(root / "run").trials
    ]
    done = _done_cells(out)
    assert set(done.values()) == {1} and set(trial_cells) < set(done)  # only the baselines' cells are new
    assert len(outcome.baselines) == 6  # 3 strengths at each of the 2 cuts
    assert [line.split(":")[0] for line in lines] == [f"baseline {n}" for n in range(6)]

    assert spec.tune.objectives == ["accuracy", "reid_top1", "excess_ssim"]  # what `leakage` orients

    def leakage(entry):  # higher is better on each objective
        f = entry.figures
        return (f.accuracy, -f.reid_top1, -f.excess_ssim)

    def covers(a, b):
        return all(x >= y for x, y in zip(leakage(a), leakage(b), strict=True))

    everything = [*outcome.trials, *(v.baseline for v in outcome.baselines)]
    front = [t for t in outcome.trials if t.number in outcome.pareto] + [
        v.baseline for v in outcome.baselines if v.on_front
    ]
    for entry in everything:  # brute force: the front is exactly what nothing within budget dominates
        dominated = any(covers(o, entry) and leakage(o) != leakage(entry) for o in everything if o.feasible)
        assert (entry in front) == (entry.feasible and not dominated), entry.name
    for verdict in outcome.baselines:
        expected = [t.number for t in outcome.trials if t.feasible and covers(t, verdict.baseline)]
        assert list(verdict.covered_by) == expected
    assert outcome.verified and {p.trial.name for p in outcome.verified} <= {e.name for e in front}
    document = json.loads((out / "tune.json").read_text())
    assert [row["name"] for row in document["baselines"]] == [f"baseline {n}" for n in range(6)]
    assert document["chosen"] == outcome.chosen.trial.name
    assert "Baselines" in (out / "tune.html").read_text()


def test_another_search_in_the_same_directory_is_refused(tuned):
    root, _, _ = tuned
    changed = {**SPEC, "tune": {**SPEC["tune"], "budget": {"max_accuracy_drop": 1}}}
    resolved = (root / "run" / "tune.resolved.yaml").read_text()
    with pytest.raises(Exception, match=r"holds a study of another search space"):
        run_tune(TuneSpec.model_validate(changed), root / "run", cache=CheckpointCache(root / "cache"), progress=False)
    assert (root / "run" / "tune.resolved.yaml").read_text() == resolved  # refused before writing over it


def _done_cells(out) -> Counter:
    with sqlite3.connect(out / "results.sqlite") as db:
        return Counter(cell for (cell,) in db.execute("SELECT cell FROM events WHERE event = 'done'"))


def test_a_study_killed_mid_way_resumes_without_recomputing_finished_trials(tmp_path):
    spec = {**SPEC, "tune": {**SPEC["tune"], "trials": 4}}
    spec_file = tmp_path / "tune.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "splitveil.cli", "tune", str(spec_file), "--out", str(out), "--no-verify",
               "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--no-progress"]  # fmt: skip
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    finished = 0
    while time.monotonic() < deadline and first.poll() is None and finished < 2:
        try:
            finished = counted_trials(_study(out))
        except Exception:  # the study is being created
            finished = 0
        time.sleep(0.2)
    assert first.poll() is None, "the study finished before it could be killed: make its trials longer"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its workers, mid-study
    first.wait()
    before = {t.number: t.values for t in _study(out).trials if t.state == optuna.trial.TrialState.COMPLETE}
    cells_before = _done_cells(out)
    assert len(before) >= 2

    subprocess.run(command, capture_output=True, timeout=600)  # exit 1: no recommendation without --verify
    study = _study(out)
    after = {t.number: t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert counted_trials(study) == 4 and len(after) == 4
    assert all(after[number] == values for number, values in before.items())  # kept, not re-run
    drawn = [tuple(sorted(t.params.items())) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(set(drawn)) == len(drawn)  # the resumed run drew new points, not the first run's again
    done = _done_cells(out)
    assert set(done.values()) == {1}  # no cell was computed twice, the interrupted trial's included
    assert set(cells_before) <= set(done)
    document = json.loads((out / "tune.json").read_text())
    assert len(document["trials"]) == 4


def test_a_ray_cluster_runs_the_same_study_as_the_local_pool(tuned, tmp_path, ray_cluster):
    root, _, _ = tuned
    result = run_tune(
        TuneSpec.model_validate(SPEC),
        tmp_path / "ray",
        cache=CheckpointCache(tmp_path / "cache"),
        progress=False,
        executor="ray",
        address=ray_cluster,
        verify=False,
        report=lambda line: None,
    )
    local, remote = _study(root / "run"), _study(tmp_path / "ray")
    assert [(t.params, t.values) for t in local.trials] == [(t.params, t.values) for t in remote.trials]
    assert len(remote.trials) == 3 and result.outcome.pareto
    assert set(_done_cells(tmp_path / "ray").values()) == {1}


def test_an_impossible_device_budget_stops_before_any_trial_in_one_line(tmp_path):
    spec_file = tmp_path / "tune.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    command = [sys.executable, "-m", "splitveil.cli", "tune", str(spec_file), "--out", str(tmp_path / "run"),
               "--max-edge-flops", "10", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 2
    message = finished.stderr.strip()
    assert "\n" not in message and "max_edge_flops=10" in message and "the closest is" in message
    assert not (tmp_path / "run" / "study.db").exists() or counted_trials(_study(tmp_path / "run")) == 0
