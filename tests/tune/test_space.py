"""Sampling a trial into a deployment, and what the device budget leaves to search."""

import optuna
import pytest

from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.tune.space import PLACEMENT, affordable, build_point, placements, sample_point
from splitveil.tune.spec import TuneSpec

SHAPE = (1, 28, 28)
FUNNEL = {
    "name": "stack",
    "label": "funnel-noise",
    "options": {
        "layers": [
            {"name": "siftfunnel", "options": {"funnel_channels": 2, "replace_last_conv": True}},
            {"name": "bounded-noise", "strength": 1.0},
        ]
    },
    "search": {"options.layers.1.strength": {"low": 0.2, "high": 2.0}},
}
NOISE = {
    "name": "bounded-noise",
    "search": {"strength": {"low": 0.1, "high": 2.0}, "options.law": {"choices": ["gaussian", "laplace"]}},
}


def _spec(**budget) -> TuneSpec:
    return TuneSpec.model_validate(
        {
            "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
            "cuts": ["conv11", "relu22"],
            "attacks": [{"name": "inverse-network"}, {"name": "output-oracle"}],
            "tune": {"candidates": [NOISE, FUNNEL], "budget": budget},
        }
    )


@pytest.fixture(scope="module")
def model():
    return create_model("he-cnn", input_shape=SHAPE, num_classes=10, widths=[4, 8, 8], hidden=32)


def test_every_cut_and_candidate_is_costed_and_the_funnel_narrows_the_feature(model):
    found = {p.key: p for p in placements(_spec(), model, SHAPE)}
    assert set(found) == {"conv11/bounded-noise", "conv11/funnel-noise", "relu22/bounded-noise", "relu22/funnel-noise"}
    assert found["relu22/funnel-noise"].feature_bytes < found["relu22/bounded-noise"].feature_bytes
    assert found["conv11/bounded-noise"].edge_flops < found["relu22/bounded-noise"].edge_flops


def test_the_budget_leaves_out_what_the_device_cannot_afford(model):
    every = placements(_spec(), model, SHAPE)
    narrow = min(p.feature_bytes for p in every if p.cut == "relu22")
    spec = _spec(max_feature_bytes=narrow)
    assert {p.key for p in affordable(spec, every)} == {"relu22/funnel-noise"}


def test_an_impossible_device_budget_is_one_line_naming_the_closest(model):
    spec = _spec(max_edge_flops=10)
    every = placements(spec, model, SHAPE)
    cheapest = min(every, key=lambda p: p.edge_flops)
    with pytest.raises(ConfigError, match=rf"max_edge_flops=10\): the closest is {cheapest.key} with") as error:
        affordable(spec, every)
    assert "\n" not in str(error.value)


def test_a_trial_samples_a_placement_then_its_candidates_settings(model):
    spec = _spec()
    every = placements(spec, model, SHAPE)
    trial = optuna.trial.FixedTrial(
        {PLACEMENT: "relu22/bounded-noise", "bounded-noise.strength": 0.5, "bounded-noise.options.law": "laplace"}
    )
    point = sample_point(trial, every)
    assert (point.cut, point.candidate, point.strength) == ("relu22", "bounded-noise", 0.5)
    assert point.defense.options == {"law": "laplace"} and point.label.startswith("bounded-noise-")
    assert "bounded-noise 0.5" in point.describe() and "laplace" in point.describe()


def test_the_label_is_a_function_of_the_sampled_values_alone():
    candidate = _spec().tune.candidates[0]
    same = [build_point("relu22", candidate, {"strength": 0.5, "options.law": "gaussian"}) for _ in range(2)]
    other = build_point("relu22", candidate, {"strength": 0.5, "options.law": "laplace"})
    elsewhere = build_point("conv11", candidate, {"strength": 0.5, "options.law": "gaussian"})
    assert same[0].label == same[1].label
    assert len({same[0].label, other.label, elsewhere.label}) == 3
