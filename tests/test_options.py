"""Options schemas, over every registry: one declaration (the signature) checked at load, in create()
and on direct construction."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import ValidationError

from splitveil.attacks import ATTACKS
from splitveil.data import DATASETS
from splitveil.defenses import DEFENSES, Defense, create_defense
from splitveil.errors import ConfigError
from splitveil.models import MODELS
from splitveil.options import option_bounds, validate_options
from splitveil.registry import Registry

REGISTRIES: dict[str, Registry[Any]] = {"model": MODELS, "dataset": DATASETS, "attack": ATTACKS, "defense": DEFENSES}
ENTRIES = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


#: For each bound, a value just outside it: the bound itself where it is strict, one past it where not.
_OUTSIDE = {"gt": 0, "ge": -1, "lt": 0, "le": 1}


def _bounded_options() -> list[tuple[str, str, str, object]]:
    """(kind, name, option, a value just outside its declared range) for every bounded option."""
    cases = []
    for kind, name in ENTRIES:
        for option, field in REGISTRIES[kind].schema(name).model_fields.items():
            for kind_of_bound, bound in option_bounds(field).items():
                cases.append((kind, name, option, bound + _OUTSIDE[kind_of_bound]))
    return cases


BOUNDED = _bounded_options()


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_every_entry_has_a_frozen_schema_with_its_signatures_options(kind: str, name: str) -> None:
    registry = REGISTRIES[kind]
    schema = registry.schema(name)
    assert list(schema.model_fields) == list(_keyword_options(registry.get(name)))
    assert schema.model_config.get("frozen") and schema.model_config.get("extra") == "forbid"
    if schema.model_fields and not any(field.is_required() for field in schema.model_fields.values()):
        defaults, first = schema(), next(iter(schema.model_fields))
        with pytest.raises(ValidationError, match="frozen"):
            setattr(defaults, first, getattr(defaults, first))


def test_bounded_options_exist_in_every_kind() -> None:
    """The range check below covers defenses, attacks and datasets, not one kind by accident."""
    assert {kind for kind, *_ in BOUNDED} >= {"attack", "dataset", "defense"}


@pytest.mark.parametrize(("kind", "name", "option", "value"), BOUNDED)
def test_a_value_outside_an_options_range_is_refused_in_one_line(
    kind: str, name: str, option: str, value: object
) -> None:
    factory = REGISTRIES[kind].get(name)
    with pytest.raises(
        ConfigError, match=rf"^{kind} '{name}': option {option}={value!r} is invalid: it must be"
    ) as error:
        validate_options(f"{kind} '{name}'", factory, {option: value})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_a_defense_built_directly_is_checked_like_one_in_a_spec(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}: option strength=-1.0 is invalid: it must be >= 0"):
        DEFENSES.get(name)(strength=-1.0)
    with pytest.raises(ConfigError, match=rf"{name}.* has no option 'nonsense'"):
        DEFENSES.get(name)(nonsense=1)


def test_validation_leaves_the_signature_readable() -> None:
    noise = DEFENSES.get("gaussian-noise")
    assert list(inspect.signature(noise).parameters) == ["strength", "where"]


def test_create_refuses_what_the_schema_refuses_and_passes_lists_on_as_tuples() -> None:
    with pytest.raises(ConfigError, match=r"defense 'feature-dropout': option strength=1.0 is invalid: it must be < 1"):
        create_defense("feature-dropout", strength=1.0)
    with pytest.raises(ConfigError, match=r"option where='edge' is invalid: choose one of 'feature' or 'input'"):
        create_defense("gaussian-noise", strength=0.1, where="edge")
    model = MODELS.create("he-cnn", input_shape=[1, 28, 28], num_classes=10)  # YAML gives the shape as a list
    assert model is not None


@pytest.mark.parametrize("name", DEFENSES.names())
def test_describe_records_the_schemas_fields_with_their_values(name: str) -> None:
    """describe() (hence cache keys and bundles) records exactly the schema's fields; a defense that
    does not override options() records the very values the schema dumps. (An override records resolved
    values: a stack's layers with each layer's options filled in.)"""
    defense = DEFENSES.create(name, strength=0.5)
    recorded = {key: value for key, value in defense.describe().items() if key != "defense"}
    dumped = DEFENSES.schema(name)(strength=0.5).model_dump()
    assert list(recorded) == list(dumped)
    if type(defense).options is Defense.options:
        assert recorded == dumped


def _keyword_options(factory: Any) -> dict[str, Any]:
    from splitveil.options import factory_options

    return factory_options(factory)
