from __future__ import annotations

import pytest

from splitveil.attacks import ATTACKS, Capability, WhiteBoxRMLE, attack_options, create_attack
from splitveil.errors import ConfigError, UnknownNameError

from .conftest import tiny_split, view_of


def test_create_attack_builds_the_registered_class():
    attack = create_attack("rmle", view_of(tiny_split(), {Capability.EDGE_WEIGHTS}), steps=3, progress=False)
    assert isinstance(attack, WhiteBoxRMLE)


def test_an_unknown_option_names_the_valid_ones():
    view = view_of(tiny_split(), {Capability.EDGE_WEIGHTS})
    with pytest.raises(ConfigError, match=r"no option 'step'.*steps.*tv_weight.*Did you mean 'steps'"):
        create_attack("rmle", view, step=3)


def test_an_unknown_attack_names_the_registered_ones():
    with pytest.raises(UnknownNameError, match="inverse-network"):
        create_attack("inversion", view_of(tiny_split()))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_takes_seed_and_progress_as_keyword_options(name):
    assert {"seed", "progress"} <= set(attack_options(name))
