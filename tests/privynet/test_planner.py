"""The planner end to end on small real data: Fashion-MNIST as the task, MNIST-5k as the public data."""

from __future__ import annotations

import json

import optuna
import pytest

from splitveil.checkpoint import CheckpointCache
from splitveil.errors import ConfigError
from splitveil.privynet import PlanSpec, load_plan_spec, plan
from splitveil.privynet.planner import PLAN_STUDY, _Search
from splitveil.privynet.report import write_plan
from splitveil.tune.engine import STUDY_FILE

SPEC = {
    "name": "tiny-plan",
    "data": {"name": "fashion-mnist", "limit": 256},
    "public": {"name": "mnist-5k", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "public_train": {"epochs": 1, "batch_size": 64},
    "layers": ["relu12", "relu22"],
    "channels": [2, 8],
    "selections": ["random", "attacker"],
    "selection_epochs": 1,
    "cloud_train": {"epochs": 1, "batch_size": 64},
    "attack": {"name": "inverse-network", "options": {"epochs": 1}},
    "verify_attack": {"name": "inverse-network", "options": {"epochs": 2}},
    "targets": 8,
}


_CACHE: list[CheckpointCache] = []
_OUT: list = []  # the module plan's directory (its study)


def result_cache() -> CheckpointCache:
    """The module's checkpoint cache (the public model trained once)."""
    return _CACHE[0]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    # relu12 (170k FLOPs at 2 channels, 282k at 4) fits this budget; relu22 (452k+) never does.
    spec = PlanSpec.model_validate({**SPEC, "constraints": {"max_edge_flops": 300_000, "max_ssim": 0.99}})
    _CACHE[:] = [CheckpointCache(tmp_path_factory.mktemp("cache"))]
    _OUT[:] = [tmp_path_factory.mktemp("plan")]
    return spec, plan(spec, out=_OUT[0], cache=result_cache(), progress=False)


def test_every_topology_is_a_candidate_and_over_budget_ones_are_not_trained(result) -> None:
    _, outcome = result
    seen = {(c.layer, c.channels, c.selection) for c in outcome.candidates}
    # relu12 has 4 channels: the count 8 is capped at 4, where attacker-guided equals random.
    assert {c.layer for c in outcome.candidates if c.within_budget} == {"relu12"}
    assert seen == {
        ("relu12", 2, "random"),
        ("relu12", 2, "attacker"),
        ("relu12", 4, "random"),
        ("relu22", 2, "random"),
        ("relu22", 2, "attacker"),
        ("relu22", 8, "random"),
    }
    for candidate in outcome.candidates:
        assert candidate.within_budget == (candidate.edge_flops <= 300_000)
        assert (candidate.accuracy is None) == (not candidate.within_budget)
        assert candidate.storage_bytes == 4 * candidate.edge_params


def test_the_chosen_topology_is_the_most_accurate_feasible_one_and_is_re_measured(result) -> None:
    _, outcome = result
    feasible = [c for c in outcome.candidates if c.feasible]
    assert outcome.chosen is not None and outcome.chosen in feasible
    assert outcome.chosen.accuracy == max(c.accuracy for c in feasible)
    verified = outcome.verification
    assert verified is not None and verified["attack"]["options"] == {"epochs": 2}
    assert verified["within_budget"] and 0 <= verified["accuracy"] <= 1 and -1 <= verified["ssim"] <= 1


def test_the_plan_is_written_with_its_candidates(result, tmp_path) -> None:
    spec, outcome = result
    path = write_plan(outcome, spec, tmp_path / "plan")
    saved = json.loads(path.read_text())
    assert saved["constraints"]["max_edge_flops"] == 300_000
    assert len((tmp_path / "plan" / "candidates.jsonl").read_text().splitlines()) == len(outcome.candidates)


def test_no_feasible_topology_is_reported_not_invented(tmp_path) -> None:
    spec = PlanSpec.model_validate(
        {**SPEC, "layers": ["relu12"], "channels": [2], "selections": ["random"], "constraints": {"max_edge_flops": 10}}
    )
    outcome = plan(spec, cache=CheckpointCache(tmp_path), progress=False)
    assert outcome.chosen is None and outcome.verification is None and outcome.notes


def test_plan_specs_are_validated_strictly(tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("layers: [relu12]\nchannels: [2]\nconstraint: {max_ssim: 0.5}\n")
    with pytest.raises(ConfigError, match="unknown key 'constraint'"):
        load_plan_spec(path)
    path.write_text("layers: [relu12]\nchannels: [2]\nconstraints: {max_ssim: 3}\n")
    with pytest.raises(ConfigError, match="constraints.max_ssim"):
        load_plan_spec(path)
    spec = load_plan_spec(path, {"constraints.max_ssim": 0.4})  # the override replaces the bad value
    assert spec.constraints.max_ssim == 0.4


class Killed(Exception):
    """A kill, as the planner sees it: its run stops in the middle of a trial."""


@pytest.fixture
def count_training(monkeypatch):
    """Count the planner's cloud trainings (each trains a cloud NN and attacks it); ``fail_after`` cuts a
    run short there, as a kill would."""
    calls: list[str] = []
    real = _Search.train_and_attack
    limit: dict[str, int | None] = {"fail_after": None}

    def counted(self, split, attack, *, seed):
        if limit["fail_after"] is not None and len(calls) >= limit["fail_after"]:
            raise Killed
        calls.append(attack.name)
        return real(self, split, attack, seed=seed)

    monkeypatch.setattr(_Search, "train_and_attack", counted)
    return calls, limit


def test_a_changed_limit_re_judges_the_stored_measurements_and_trains_nothing_again(result, count_training) -> None:
    spec, outcome = result
    calls, _ = count_training
    stricter = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"max_edge_flops": 200_000})})
    again = plan(stricter, out=_OUT[0], cache=result_cache(), progress=False)
    before = {c.key: (c.accuracy, c.ssim, c.keep) for c in outcome.candidates}
    assert all((c.accuracy, c.ssim, c.keep) == before[c.key] for c in again.candidates if c.accuracy is not None)
    # relu12 at 4 channels (282k FLOPs) no longer fits; its measurement is kept but judged over budget.
    by_key = {c.key: c for c in again.candidates}
    assert not by_key["relu12/4/random"].within_budget and not by_key["relu12/4/random"].feasible
    assert by_key["relu12/2/random"].within_budget
    # Only a new choice is re-measured (its verification is stored with the study, like the trials).
    assert again.chosen is not None and again.chosen.channels == 2
    assert calls == ([] if again.chosen.key == outcome.chosen.key else [spec.verify_attack.name])


def test_a_killed_plan_resumes_without_training_its_finished_topologies_again(tmp_path, count_training) -> None:
    calls, limit = count_training
    spec = PlanSpec.model_validate(
        {**SPEC, "layers": ["relu12"], "channels": [2, 4], "selections": ["random"], "constraints": {"max_ssim": 0.99}}
    )
    limit["fail_after"] = 1  # the second topology's training is killed
    cache, out = CheckpointCache(tmp_path / "cache"), tmp_path / "plan"
    with pytest.raises(Killed):
        plan(spec, out=out, cache=cache, progress=False)
    assert calls == ["inverse-network"]
    limit["fail_after"] = None
    resumed = plan(spec, out=out, cache=cache, progress=False)
    # The first topology is read back from the study; the killed one and the verification train.
    assert calls == ["inverse-network", "inverse-network", "inverse-network"]
    assert all(c.accuracy is not None for c in resumed.candidates) and resumed.verification is not None
    study = optuna.load_study(study_name=PLAN_STUDY, storage=f"sqlite:///{out / STUDY_FILE}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].user_attrs["resumes"] == 1


def test_a_directory_planned_with_another_spec_is_refused(result) -> None:
    spec, _ = result
    other = spec.model_copy(update={"targets": 9})
    with pytest.raises(ConfigError, match="another search space.*new --out"):
        plan(other, out=_OUT[0], cache=result_cache(), progress=False)
