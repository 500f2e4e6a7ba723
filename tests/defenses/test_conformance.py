"""Every registered defense: strength 0 is the identity, positive strengths run, settings are reported."""

from __future__ import annotations

import math

import pytest
import torch

from splitveil.defenses import DEFENSES, Defense, create_defense
from splitveil.train import Batch, TrainHook, fit

from .conftest import images, tiny_config, tiny_split

#: Every registered defense with its defaults, and configured cases the defaults leave untested: a
#: stack of an input defense, noise and the salt (output privacy stacks last).
CASES: dict[str, tuple[str, dict[str, object]]] = {
    **{name: (name, {}) for name in DEFENSES.names()},
    "stack:nopeek+bounded-noise+salted": (
        "stack",
        {"layers": [{"name": "nopeek"}, {"name": "bounded-noise"}, {"name": "salted", "strength": 2.0}]},
    ),
}
NAMES = list(CASES)


def build(case: str, strength: float) -> Defense:
    name, options = CASES[case]
    return create_defense(name, strength=strength, **options)


#: A positive strength valid for every defense (feature-dropout needs < 1).
STRENGTH = 0.3


def test_the_baseline_defenses_are_registered() -> None:
    assert {"none", "gaussian-noise", "laplace-noise", "feature-dropout", "nopeek", "adversarial"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_zero_strength_apply_is_the_identity(name: str, mode: str) -> None:
    split = tiny_split()
    defended = build(name, 0).apply(split)
    split.train(mode == "train")
    defended.train(mode == "train")
    x = images(4)
    with torch.no_grad():
        assert torch.equal(defended.edge(x), split.edge(x))
        assert torch.equal(defended(x), split(x))
        z, logits = defended.forward_with_features(x)
        assert torch.equal(z, split.edge(x)) and torch.equal(logits, split(x))


@pytest.mark.parametrize("name", NAMES)
def test_zero_strength_loss_terms_add_exactly_nothing(name: str) -> None:
    split = tiny_split().train()
    defense = build(name, 0)
    x = images(8)
    z, logits = defense.apply(split).forward_with_features(x)
    terms = defense.loss_terms(Batch(x, torch.zeros(8, dtype=torch.int64)), z, logits)
    for value in terms.values():
        assert value.ndim == 0 and value.item() == 0.0
    task = torch.nn.functional.cross_entropy(logits, torch.zeros(8, dtype=torch.int64))
    # What the loop computes: the task loss and the terms summed; unchanged to the last bit.
    assert torch.equal(torch.stack([task, *terms.values()]).sum(), task)


@pytest.mark.parametrize("name", NAMES)
def test_positive_strength_runs_and_is_finite(name: str) -> None:
    split = tiny_split()
    defense = build(name, STRENGTH)
    defended = defense.apply(split)
    x = images(8)
    for training in (True, False):
        defended.train(training)
        assert torch.isfinite(defended(x)).all()
    defended.train()
    z, logits = defended.forward_with_features(x)
    terms = defense.loss_terms(Batch(x, torch.zeros(8, dtype=torch.int64)), z, logits)
    assert all(isinstance(key, str) and value.ndim == 0 and torch.isfinite(value) for key, value in terms.items())
    if terms:
        torch.stack(list(terms.values())).sum().backward()  # differentiable
    assert all(isinstance(hook, TrainHook) for hook in defense.hooks())


@pytest.mark.parametrize("name", NAMES)
def test_trains_one_epoch_in_the_loop(name: str, tiny_data) -> None:
    defense = build(name, STRENGTH)
    model = defense.apply(tiny_split())
    result = fit(
        model, tiny_data, tiny_config(), seed=0, loss_terms=[defense.loss_terms], hooks=defense.hooks(), progress=False
    )
    assert math.isfinite(result.history[0].train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_describe_names_the_defense_and_its_strength(name: str) -> None:
    description = build(name, STRENGTH).describe()
    assert description["defense"] == CASES[name][0] and description["strength"] == STRENGTH
    assert isinstance(DEFENSES.create(CASES[name][0], strength=STRENGTH, **CASES[name][1]), Defense)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strength", [-0.1, float("nan"), float("inf")])
def test_invalid_strength_is_a_clear_value_error(name: str, strength: float) -> None:
    with pytest.raises(ValueError, match="strength"):
        build(name, strength)


@pytest.mark.parametrize("name", NAMES)
def test_apply_does_not_change_the_given_split(name: str) -> None:
    split = tiny_split().eval()
    edge, cloud = split.edge, split.cloud
    defended = build(name, STRENGTH).apply(split)
    assert split.edge is edge and split.cloud is cloud
    assert defended.cloud is cloud and defended.cut_name == split.cut_name
    assert not defended.training  # the deployed split keeps the mode it was given


@pytest.mark.parametrize("name", DEFENSES.names())
def test_describe_records_every_constructor_option(name: str) -> None:
    """Cache keys and bundles are built from describe(): an option left out of it would silently let two
    differently configured defenses share one checkpoint."""
    from splitveil.registry import factory_options

    described = create_defense(name, strength=0.5).describe()
    assert set(described) == {"defense", *factory_options(DEFENSES.get(name))}
