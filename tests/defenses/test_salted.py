"""Salted DNNs: the salt enters on the edge, is mixed before the cut, and never reaches the cloud."""

from __future__ import annotations

import inspect

import pytest
import torch

from splitveil.checkpoint import load_weights, save_checkpoint
from splitveil.config import TrainConfig
from splitveil.defenses import create_defense, salt_points
from splitveil.errors import ConfigError
from splitveil.salt import SaltedSplit, SaltMaps, SaltVector
from splitveil.train import evaluate, fit

from .conftest import NUM_CLASSES, images, same_state, snapshot, tiny_split


def salted(strength: float = 0.5, **options: object) -> SaltedSplit:
    split = create_defense("salted", strength=strength, **options).apply(tiny_split())
    assert isinstance(split, SaltedSplit)
    return split


def test_salting_leaves_the_model_it_was_cut_from_alone() -> None:
    split = tiny_split()
    before = snapshot(split)
    defended = create_defense("salted", strength=0.5, salt_at="relu11").apply(split)
    assert same_state(split, before)
    x = images(4)
    assert split.edge(x).shape == defended.edge(x).shape  # the wire format is unchanged


def test_the_salt_changes_the_feature_and_a_fixed_salt_is_deterministic() -> None:
    split = salted().eval()
    x = images(6)
    zero, one = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(split.edge(x, zero), split.edge(x, zero))
        assert not torch.allclose(split.edge(x, zero), split.edge(x, one))


def test_forward_decodes_what_the_cloud_computes_with_the_same_salts() -> None:
    split = salted().eval()
    x = images(8)
    torch.manual_seed(0)
    _, decoded = split.forward_with_features(x)
    torch.manual_seed(0)
    salt = split.edge.source.draw(8)
    z, salted_logits = split.salted_forward(x, salt)
    torch.testing.assert_close(decoded, split.decode(salted_logits, salt))
    torch.testing.assert_close(split.cloud(z), salted_logits)


def test_the_cloud_api_has_no_place_for_a_salt() -> None:
    split = salted()
    assert list(inspect.signature(split.cloud.forward).parameters) == ["z"]
    assert not any("salt" in name or "code" in name for name in split.cloud.state_dict())
    assert all(name.startswith("edge.") for name in split.state_dict() if "maps" in name)


@pytest.mark.parametrize(("salt_at", "maps"), [("relu11", SaltMaps), ("pool1", SaltMaps)])
def test_salt_maps_are_sized_by_strength(salt_at: str, maps: type) -> None:
    split = salted(0.5, salt_at=salt_at)
    assert isinstance(split.edge.maps, maps)
    assert split.edge.maps.expand.out_channels == 2  # half of the 4 channels the next conv took


def test_a_flat_salted_layer_uses_a_salt_vector() -> None:
    split = create_defense("salted", strength=0.25, salt_at="flatten").apply(tiny_split("relu4"))
    assert isinstance(split.edge.maps, SaltVector)
    assert torch.isfinite(split(images(3))).all()


def test_the_salt_costs_edge_flops() -> None:
    plain, defended = tiny_split(), salted(0.5, salt_at="relu11")
    shape = (1, 12, 12)
    assert defended.profile(shape).edge_flops > plain.profile(shape).edge_flops


def test_a_salt_point_at_the_cut_is_refused_with_the_valid_points() -> None:
    with pytest.raises(ConfigError, match="salt points of this edge: .*relu11"):
        salted(salt_at="relu22")
    assert "relu22" not in salt_points(tiny_split().edge)


def test_the_shift_code_needs_k_salts() -> None:
    with pytest.raises(ConfigError, match="exactly K"):
        salted(scheme="shift", num_salts=NUM_CLASSES + 1)


def test_the_default_latin_code_needs_a_multiple_of_k_salts() -> None:
    assert salted(num_salts=2 * NUM_CLASSES).edge.code.scheme == "latin"
    with pytest.raises(ConfigError, match=f"multiple of K={NUM_CLASSES}"):
        salted(num_salts=NUM_CLASSES + 1)


def test_bad_salts_are_clear_errors() -> None:
    split = salted()
    with pytest.raises(ValueError, match="one per sample"):
        split.edge(images(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        split.edge(images(2), torch.tensor([0, 3]))


def test_a_salted_model_learns_the_salted_task(tiny_data) -> None:
    split = salted(1.0, salt_at="relu11", scheme="shift")
    fit(split, tiny_data, TrainConfig(epochs=60, batch_size=32, lr=3e-3), seed=0, progress=False)
    decoded_accuracy = evaluate(split, tiny_data.test)["accuracy"]
    # Reading the cloud's raw argmax as the label is right only when the salt happens to be 0.
    torch.manual_seed(0)
    salt = split.edge.source.draw(len(tiny_data.test))
    with torch.no_grad():
        raw = split.salted_forward(tiny_data.test.images, salt)[1].argmax(dim=1)
    raw_accuracy = float((raw == tiny_data.test.labels).float().mean())
    assert decoded_accuracy > 0.8
    assert raw_accuracy < decoded_accuracy - 0.3


def test_weights_round_trip_through_a_checkpoint(tmp_path) -> None:
    split = salted(0.5, salt_at="relu11")
    save_checkpoint(tmp_path / "entry", split, {"cache_key": "x"})
    fresh = salted(0.5, salt_at="relu11")
    load_weights(tmp_path / "entry", fresh)
    x, salt = images(4), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().salted_forward(x, salt)[1], split.eval().salted_forward(x, salt)[1])


def test_the_salt_layers_depend_on_the_seed_alone() -> None:
    torch.manual_seed(1)
    first = salted(0.5, seed=3)
    torch.manual_seed(2)
    second = salted(0.5, seed=3)
    assert same_state(second, snapshot(first))
    assert not same_state(salted(0.5, seed=4), snapshot(first))


def test_smoothing_is_a_uniform_cross_entropy_blind_to_the_salt() -> None:
    defense = create_defense("salted", strength=0.5, smoothing=0.5)
    split = defense.apply(tiny_split())
    salts = torch.tensor([0, 1, 2, 0])
    _, salted_logits = split.salted_forward(images(4), salts)
    decoded = split.decode(salted_logits, salts)
    term = defense.loss_terms(None, None, decoded)["smoothing"]  # type: ignore[arg-type]
    expected = 0.5 * -torch.log_softmax(salted_logits, dim=1).mean()
    assert torch.allclose(term, expected)  # the same on salted and decoded logits: a permutation
    assert create_defense("salted", strength=0.0, smoothing=0.5).loss_terms(None, None, decoded) == {}  # type: ignore[arg-type]
    assert create_defense("salted", strength=0.5).loss_terms(None, None, decoded) == {}  # type: ignore[arg-type]


def test_smoothing_is_recorded_and_checked() -> None:
    assert create_defense("salted", strength=0.5).describe()["smoothing"] == 0.0
    assert create_defense("salted", strength=0.5, smoothing=1).describe()["smoothing"] == 1.0
    with pytest.raises(ConfigError, match="smoothing=-1 is invalid: it must be >= 0"):
        create_defense("salted", strength=0.5, smoothing=-1)
