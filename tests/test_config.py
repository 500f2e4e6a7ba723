import pytest

from splitveil.config import ExperimentSpec, apply_overrides, load_spec, parse_spec, write_resolved
from splitveil.errors import ConfigError, UnknownNameError


def test_defaults_resolve():
    spec = parse_spec({})
    assert spec.model.name == "he-cnn" and spec.data.name == "fashion-mnist" and spec.train.epochs == 10


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as info:
        parse_spec({"train": {"epoch": 3}}, source="s.yaml")
    message = str(info.value)
    assert "unknown key 'train.epoch'" in message and "epochs, batch_size, lr" in message
    assert "\n" not in message


def test_unknown_top_level_key():
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'atacks' \(allowed: name, seed, data, model, train, cuts, attacks, defenses, audit\)",
    ):
        parse_spec({"atacks": []})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer.*got 'ten'"):
        parse_spec({"train": {"epochs": "ten"}})


def test_out_of_range_and_bad_choice():
    with pytest.raises(ConfigError, match=r"train\.lr: .*greater than 0"):
        parse_spec({"train": {"lr": 0}})
    with pytest.raises(ConfigError, match=r"train\.optimizer: .*'adam' or 'sgd'"):
        parse_spec({"train": {"optimizer": "rmsprop"}})


def test_unknown_model_and_dataset_list_choices():
    with pytest.raises(UnknownNameError, match="unknown model 'alexnet'.*he-cnn"):
        parse_spec({"model": {"name": "alexnet"}})
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet'.*fashion-mnist"):
        parse_spec({"data": {"name": "imagenet"}})


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\ntrain:\n  epochs: 2\n")
    spec = load_spec(path, {"train.epochs": 5, "model.name": "lenet", "seed": None})
    assert spec.train.epochs == 5 and spec.model.name == "lenet" and spec.seed == 0
    resolved = write_resolved(spec, tmp_path / "out")
    assert load_spec(resolved) == spec


def test_overrides_do_not_mutate_input():
    raw = {"train": {"epochs": 1}}
    apply_overrides(raw, {"train.epochs": 9})
    assert raw == {"train": {"epochs": 1}}


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_spec(listy)


def test_shipped_configs_are_valid():
    from pathlib import Path

    from splitveil.privynet import PlanSpec, load_plan_spec

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        if path.name.startswith("plan-"):  # PrivyNet planner specs (splitveil plan)
            assert isinstance(load_plan_spec(path), PlanSpec)
        else:
            assert isinstance(load_spec(path), ExperimentSpec)


def test_defense_sweep_is_validated_before_anything_runs():
    spec = parse_spec({"defenses": [{"name": "gaussian-noise", "strengths": [0, 0.5], "options": {"where": "input"}}]})
    assert spec.defenses[0].display_name == "gaussian-noise" and spec.defenses[0].strengths == [0, 0.5]
    with pytest.raises(ConfigError, match=r"defense 'nopeek' has no option 'wehre'"):
        parse_spec({"defenses": [{"name": "nopeek", "strengths": [1], "options": {"wehre": 1}}]})
    with pytest.raises(ConfigError, match=r"defenses\.0\.strengths: strengths must be >= 0"):
        parse_spec({"defenses": [{"name": "nopeek", "strengths": [-1]}]})
    with pytest.raises(ConfigError, match=r"unknown key 'defenses\.0\.strength' \(allowed: name, label, strengths"):
        parse_spec({"defenses": [{"name": "nopeek", "strength": 1}]})
    with pytest.raises(UnknownNameError, match="unknown defense 'peek'"):
        parse_spec({"defenses": [{"name": "peek", "strengths": [1]}]})


def test_defense_labels_must_be_distinct():
    twice = [{"name": "gaussian-noise", "strengths": [1]}, {"name": "gaussian-noise", "strengths": [2]}]
    with pytest.raises(ConfigError, match="used twice.*distinct `label`"):
        parse_spec({"defenses": twice})
    twice[1]["label"] = "gaussian-noise-2"
    assert [d.display_name for d in parse_spec({"defenses": twice}).defenses] == ["gaussian-noise", "gaussian-noise-2"]
