"""The defense registry: ``create_defense(name, strength=..., **options)`` with options checked by name.

Every registered defense is a class whose ``__init__(self, *, strength, ...)`` takes only keyword
options, annotated with their types and ranges: that signature is the defense's options schema
(:mod:`splitveil.options`), so a typo or an out-of-range value in a spec is reported in one line
with what the defense accepts. ``"none"`` is the undefended split.
"""

from __future__ import annotations

from typing import Any, TypeVar

from splitveil.defenses.base import Defense, NoDefense
from splitveil.options import factory_options
from splitveil.registry import Registry

DEFENSES: Registry[Defense] = Registry("defense")

D = TypeVar("D", bound=type[Defense])


def register_defense(cls: D) -> D:
    """Class decorator registering a defense under its ``name`` (so the name is written once)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered")
    DEFENSES.register(cls.name)(cls)
    return cls


register_defense(NoDefense)


def defense_options(name: str) -> list[str]:
    """The keyword options the defense registered as ``name`` accepts (``strength`` included)."""
    return list(factory_options(DEFENSES.get(name)))


def create_defense(name: str, *, strength: float, **options: Any) -> Defense:
    """Build the defense registered as ``name`` at ``strength``.

    Example:
        >>> defense = create_defense("gaussian-noise", strength=0.5, where="input")
        >>> defense.describe()
        {'defense': 'gaussian-noise', 'strength': 0.5, 'where': 'input'}

    Raises:
        UnknownNameError: no defense is registered as ``name``.
        ConfigError: an option is not one the defense accepts, or a value is out of range.
    """
    return DEFENSES.create(name, strength=strength, **options)
