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
        match=r"unknown key 'atacks' \(allowed: plugins, name, seed, data, model, train, cuts, attacks, defenses, audit\)",
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


def test_a_different_spec_written_to_the_same_directory_keeps_the_earlier_one(tmp_path):
    first, second = parse_spec({"name": "a"}), parse_spec({"name": "b"})
    write_resolved(first, tmp_path)
    write_resolved(first, tmp_path)  # the same spec again: nothing to keep aside
    assert [p.name for p in tmp_path.iterdir()] == ["spec.resolved.yaml"]
    latest = write_resolved(second, tmp_path)
    assert load_spec(latest) == second
    (kept,) = tmp_path.glob("spec.resolved.*.yaml")
    assert load_spec(kept) == first


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
    from splitveil.tune import TuneSpec, load_tune_spec

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        if path.name.startswith("plan-"):  # PrivyNet planner specs (splitveil plan)
            assert isinstance(load_plan_spec(path), PlanSpec)
        elif path.name.startswith("tune-"):  # tuning specs (splitveil tune)
            assert isinstance(load_tune_spec(path), TuneSpec)
            with pytest.raises(ConfigError, match=rf"tuning spec .*splitveil tune {path}"):
                load_spec(path)
        else:
            assert isinstance(load_spec(path), ExperimentSpec)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x00\xff\xfe", "not a text file"), (b"", "is empty"), (b"- 1\n", "expected a mapping")],
)
def test_plan_specs_are_read_like_bench_specs(tmp_path, content, message):
    from splitveil.privynet import load_plan_spec

    path = tmp_path / "plan.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_plan_spec(path)


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


def test_attack_options_are_checked_when_the_spec_loads():
    """A typo in an attack option used to fail 70-80 s into a sweep, after training (issue 18, defect 6)."""
    with pytest.raises(
        ConfigError, match=r"attacks\.0: attack 'rmle' has no option 'stpes'.*Did you mean 'steps'"
    ) as info:
        parse_spec({"attacks": [{"name": "rmle", "options": {"stpes": 300}}]}, source="s.yaml")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"attack 'rmle': option steps='300' is invalid.*without quotes"):
        parse_spec({"attacks": [{"name": "rmle", "options": {"steps": "300"}}]})
    with pytest.raises(ConfigError, match=r"option lr='1e-3' is invalid.*write 1\.0e-3"):
        parse_spec({"attacks": [{"name": "inverse-network", "options": {"lr": "1e-3"}}]})
    with pytest.raises(ConfigError, match=r"option loss='l1' is invalid: choose one of 'mse' or 'ssim'"):
        parse_spec({"attacks": [{"name": "inverse-network", "options": {"loss": "l1"}}]})
    with pytest.raises(ConfigError, match=r"option 'seed' cannot be set here; the run passes the spec's top-level"):
        parse_spec({"attacks": [{"name": "rmle", "options": {"seed": 1}}]})
    # Options a subclass hands on to its parent are valid; so are YAML lists and ints for floats.
    spec = parse_spec(
        {"attacks": [{"name": "inverse-network-noise", "options": {"num_queries": 8, "epochs": 1, "lr": 1}}]}
    )
    assert spec.attacks[0].options == {"num_queries": 8, "epochs": 1, "lr": 1}


def test_model_options_are_checked_when_the_spec_loads():
    """An unknown model option used to be a 59-line traceback once training started (issue 18, defect 6)."""
    with pytest.raises(
        ConfigError, match=r"model: model 'he-cnn' has no option 'width'.*Did you mean 'widths'"
    ) as info:
        parse_spec({"model": {"name": "he-cnn", "options": {"width": [4, 8, 8]}}}, source="s.yaml")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"option widths=\[4, 8\] is invalid: expected tuple\[int, int, int\]"):
        parse_spec({"model": {"name": "he-cnn", "options": {"widths": [4, 8]}}})
    with pytest.raises(ConfigError, match=r"model 'resnet8' has no option 'blocks_per_stage'; valid options: widths"):
        parse_spec({"model": {"name": "resnet8", "options": {"blocks_per_stage": 2}}})
    with pytest.raises(ConfigError, match=r"option 'num_classes' cannot be set here; it follows the dataset"):
        parse_spec({"model": {"name": "lenet", "options": {"num_classes": 2}}})
    spec = parse_spec({"model": {"name": "vgg-small", "options": {"widths": [4, 8, 8], "hidden": 16, "dropout": 0}}})
    assert spec.model.options["widths"] == [4, 8, 8]  # stored as written: YAML lists stand for tuples


def test_mine_options_and_the_evaluator_model_are_checked_when_the_spec_loads():
    with pytest.raises(ConfigError, match=r"audit\.mine: MINE has no option 'hiden'.*Did you mean 'hidden'"):
        parse_spec({"audit": {"mine": {"options": {"hiden": 64}}}})
    with pytest.raises(ConfigError, match=r"option 'steps' cannot be set here; use audit\.mine\.steps"):
        parse_spec({"audit": {"mine": {"options": {"steps": 5}}}})
    with pytest.raises(UnknownNameError, match="unknown model 'alexnet'"):
        parse_spec({"audit": {"evaluator": {"model": "alexnet"}}})


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "---\n"])
def test_an_empty_spec_file_is_refused(tmp_path, text):
    """An empty spec used to start the default sweep: every cut of he-cnn on all of Fashion-MNIST."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml is empty; a spec names at least.*docs/specs\.md"):
        load_spec(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00\x01binary", "is not a text file"),
        (b"seed: 2024-13-45\n", "not valid YAML (ValueError: month must be in 1..12)"),
        (b"[" * 5000, "not valid YAML (RecursionError"),
        (b"seed: \x00\n", "not valid YAML (ReaderError"),
        (b"1: 2\n", "1: Keys should be strings"),
    ],
)
def test_unreadable_spec_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_directory_is_not_a_spec_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; pass the path of a YAML spec"):
        load_spec(tmp_path)
