"""The `tune` section: what it accepts, and the one-line refusals of what it cannot run."""

import pytest
import yaml

from splitveil.errors import ConfigError, SplitveilError
from splitveil.tune import TuneSpec, load_tune_spec
from splitveil.tune.spec import Range, set_path

BASE = {
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "cuts": ["relu22"],
    "attacks": [{"name": "inverse-network", "options": {"epochs": 1}}, {"name": "output-oracle"}],
}


def _spec(tune: dict, **changes) -> dict:
    return {**BASE, **changes, "tune": tune}


def _load(tmp_path, raw: dict) -> TuneSpec:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_tune_spec(path)


NOISE = {"name": "bounded-noise", "epochs": 1, "search": {"strength": {"low": 0.1, "high": 2.0, "log": True}}}


def test_a_candidate_becomes_a_defense_spec_with_the_sampled_values(tmp_path):
    spec = _load(tmp_path, _spec({"candidates": [NOISE]}))
    candidate = spec.tune.candidates[0]
    defense = candidate.defense_spec({"strength": 0.7, "options.law": "laplace"}, label="x")
    assert defense.name == "bounded-noise" and defense.strengths == [0.7] and defense.epochs == 1
    assert defense.options == {"law": "laplace"} and defense.display_name == "x"
    assert spec.search_cuts == ["relu22"] and spec.experiment().defenses == []


def test_a_stack_layer_is_reached_by_index():
    settings = {"options": {"layers": [{"name": "siftfunnel"}, {"name": "bounded-noise", "strength": 1.0}]}}
    set_path(settings, "options.layers.1.strength", 0.4)
    assert settings["options"]["layers"][1] == {"name": "bounded-noise", "strength": 0.4}
    with pytest.raises(ConfigError, match=r"'5' is not an index of a list of 2"):
        set_path(settings, "options.layers.5.strength", 0.4)


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ({**NOISE, "epoch": 3}, r"unknown key 'epoch'"),
        ({"name": "feature-dropout", "search": {"strength": {"low": 0.2, "high": 1.0}}}, r"strength.*< 1"),
        ({"name": "bounded-noise", "search": {"options.law": {"choices": ["gaussian", "cauchy"]}}}, r"law"),
        ({"name": "bounded-noise", "strengths": [1.0]}, r"give `strength` \(one value\)"),
        ({"name": "bounded-noise", "search": {"strength": {"low": 0.0, "high": 1.0, "log": True}}}, r"log range"),
        ({"name": "bounded-noise", "search": {"strength": {"low": 2.0, "high": 1.0}}}, r"low < high"),
        ({"name": "no-such-defense"}, r"no-such-defense"),
    ],
)
def test_a_bad_candidate_is_refused_at_load_in_one_line(tmp_path, candidate, message):
    with pytest.raises(SplitveilError, match=message) as error:  # an unknown name is an UnknownNameError
        _load(tmp_path, _spec({"candidates": [candidate]}))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_spec({"candidates": [NOISE]}, attacks=[{"name": "inverse-network"}]), r"needs the output-oracle"),
        (_spec({"candidates": [NOISE]}, attacks=[{"name": "output-oracle"}]), r"not an oracle"),
        (_spec({"candidates": [NOISE], "objectives": ["reid_top1", "accuracy"]}), r"start with accuracy"),
        (_spec({"candidates": [NOISE, NOISE]}), r"appear twice"),
        (_spec({"candidates": [NOISE]}, defenses=[{"name": "nopeek", "strengths": [1]}]), r"tune.candidates"),
        (_spec({"candidates": []}), r"candidates"),
        (_spec({"candidates": [NOISE], "budget": {"max_accuracy_drop": -1}}), r"max_accuracy_drop"),
    ],
)
def test_a_search_it_cannot_judge_is_refused(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, raw)


def test_a_spec_without_a_tune_section_names_the_example(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=r"no `tune` section; see configs/tune-relu22.yaml"):
        load_tune_spec(path)


def test_ranges_of_integers_are_integer_ranges():
    assert Range(low=1, high=6).integer and not Range(low=1.0, high=6).integer


def test_the_shipped_tuning_spec_loads():
    spec = load_tune_spec("configs/tune-relu22.yaml")
    assert spec.tune.objectives == ["accuracy", "reid_top1", "excess_ssim"]
    assert {c.display_name for c in spec.tune.candidates} == {"bounded-noise", "funnel-noise", "nopeek"}


@pytest.mark.parametrize(
    ("baselines", "message"),
    [
        ([{"name": "no-such-defense", "strengths": [1.0]}], r"no-such-defense"),
        ([{"name": "nopeek", "strengths": [1.0]}, {"name": "nopeek", "strengths": [2.0]}], r"tune.baselines"),
        ([{"name": "nopeek", "strength": 1.0}], r"strength"),
    ],
)
def test_a_bad_baseline_is_refused_at_load_in_one_line(tmp_path, baselines, message):
    with pytest.raises(SplitveilError, match=message) as error:
        _load(tmp_path, _spec({"candidates": [NOISE], "baselines": baselines}))
    assert "\n" not in str(error.value)


def test_baselines_do_not_change_the_search_a_study_belongs_to(tmp_path):
    from splitveil.tune.study import search_identity

    plain = _load(tmp_path, _spec({"candidates": [NOISE]}))
    with_baselines = _load(
        tmp_path, _spec({"candidates": [NOISE], "baselines": [{"name": "nopeek", "strengths": [1]}]})
    )
    other_search = _load(tmp_path, _spec({"candidates": [{**NOISE, "epochs": 2}]}))
    assert search_identity(plain) == search_identity(with_baselines) != search_identity(other_search)


def test_every_strength_of_a_baseline_is_a_point_at_every_cut(tmp_path):
    from splitveil.tune.baselines import BASELINE, baseline_points

    raw = _spec({"candidates": [NOISE], "baselines": [{"name": "gaussian-noise", "strengths": [0.25, 1.0]}]})
    spec = _load(tmp_path, {**raw, "cuts": ["conv11", "relu22"]})
    points = baseline_points(spec)
    assert [(p.cut, p.strength) for p in points] == [
        ("conv11", 0.25),
        ("conv11", 1.0),
        ("relu22", 0.25),
        ("relu22", 1.0),
    ]
    assert {p.candidate for p in points} == {BASELINE} and all(p.defense.strengths == [p.strength] for p in points)


def test_the_shipped_spec_measures_each_single_defense_of_its_bench_spec_as_a_baseline():
    from splitveil.config import load_spec

    spec = load_tune_spec("configs/tune-relu22.yaml")
    grid = {defense.display_name: defense for defense in load_spec("configs/defenses-relu22.yaml").defenses}
    assert sorted(b.display_name for b in spec.tune.baselines) == sorted(grid)
    for baseline in spec.tune.baselines:  # one of its strengths there, trained the same way
        bench = grid[baseline.display_name]
        assert set(baseline.strengths) <= set(bench.strengths)
        assert baseline.model_dump(exclude={"strengths"}) == bench.model_dump(exclude={"strengths"})
