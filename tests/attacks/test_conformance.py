"""Every registered attack honours the protocol: capabilities, shapes, range, no side effects, determinism.

Parametrised over ``ATTACKS.names()``, so a newly registered attack is covered without new test code
(give it fast options in ``FAST`` if its defaults are slow).
"""

from __future__ import annotations

import pytest
import torch

from splitveil.attacks import ATTACKS, Capability, create_attack
from splitveil.errors import CapabilityError

from .conftest import INPUT_SHAPE, TARGET_SEED, TARGETS, assert_unchanged, smooth_images, snapshot, tiny_split, view_of

FAST: dict[str, dict[str, object]] = {
    "rmle": {"steps": 5},
    "inverse-network": {"epochs": 1, "batch_size": 16, "width": 8},
    "inverse-network-noise": {"num_queries": 32, "epochs": 1, "batch_size": 16, "width": 8},
    "query-free": {"shadow_epochs": 1, "shadow_batch_size": 16, "steps": 5},
}


def _attack(name: str, view, *, seed: int = 0):
    return create_attack(name, view, seed=seed, progress=False, **FAST.get(name, {}))


def _requirements() -> list[tuple[str, Capability]]:
    return [
        (name, capability)
        for name in ATTACKS.names()
        for capability in sorted(ATTACKS.get(name).requires, key=lambda c: c.value)
    ]


def test_the_paper_attacks_are_registered():
    assert {"rmle", "inverse-network", "inverse-network-noise", "query-free"} <= set(ATTACKS.names())
    for name in ATTACKS.names():
        assert ATTACKS.get(name).requires, f"{name} declares no capabilities"


@pytest.mark.parametrize(("name", "missing"), _requirements(), ids=lambda v: getattr(v, "name", v))
def test_a_missing_capability_is_refused_by_name(name, missing):
    view = view_of(tiny_split(), set(Capability) - {missing})
    with pytest.raises(CapabilityError, match=missing.value):
        _attack(name, view)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_fit_invert_shape_range_no_side_effects_and_determinism(name):
    split = tiny_split()
    targets = smooth_images(TARGETS, seed=TARGET_SEED)
    z = split.edge(targets).detach()
    before_edge, before_cloud = snapshot(split.edge), snapshot(split.cloud)
    view = view_of(split, ATTACKS.get(name).requires)

    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    first = _attack(name, view).fit().invert(z)
    assert torch.equal(torch.rand(1), expected_draw), "the caller's global RNG was consumed"

    assert first.shape == (TARGETS, *INPUT_SHAPE)
    assert first.dtype == torch.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert_unchanged(split.edge, before_edge)
    assert_unchanged(split.cloud, before_cloud)
    assert not split.edge.training and not split.cloud.training, "an attack changed the deployed mode"

    again = _attack(name, view).fit().invert(z)
    assert torch.equal(first, again)
