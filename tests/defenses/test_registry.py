from __future__ import annotations

import pytest

from splitveil.defenses import DEFENSES, NoDefense, create_defense, defense_options, register_defense
from splitveil.defenses.base import Defense
from splitveil.errors import ConfigError, UnknownNameError


def test_none_is_the_undefended_split() -> None:
    assert isinstance(create_defense("none", strength=0), NoDefense)
    assert create_defense("none", strength=0).describe() == {"defense": "none", "strength": 0.0}


def test_unknown_defense_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownNameError, match="gaussian-noise"):
        create_defense("gausian-noise", strength=1)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid options: strength, where.*Did you mean 'where'"):
        create_defense("gaussian-noise", strength=1, were="input")
    with pytest.raises(ConfigError, match=r"valid options: strength\."):
        create_defense("nopeek", strength=1, where="input")


def test_options_are_the_keyword_arguments() -> None:
    assert defense_options("gaussian-noise") == ["strength", "where"]
    assert defense_options("feature-dropout") == ["strength", "rescale"]
    assert "adversary_steps" in defense_options("adversarial")


def test_describe_records_the_options() -> None:
    assert create_defense("feature-dropout", strength=0.2, rescale=True).describe() == {
        "defense": "feature-dropout",
        "strength": 0.2,
        "rescale": True,
    }


def test_registering_needs_a_unique_name() -> None:
    class Nameless(Defense):
        pass

    with pytest.raises(ValueError, match="name"):
        register_defense(Nameless)

    class Duplicate(Defense):
        name = "none"

    with pytest.raises(ValueError, match="already registered"):
        register_defense(Duplicate)
    assert DEFENSES.get("none") is NoDefense


def test_strength_must_be_a_number() -> None:
    with pytest.raises(ConfigError, match="strength"):
        create_defense("none", strength=True)  # type: ignore[arg-type]
