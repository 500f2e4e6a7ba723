"""The defense registry: ``create_defense(name, strength=..., **options)`` with options checked by name.

Every registered defense is a class whose ``__init__(self, *, strength, ...)`` takes only keyword
options; those names are the defense's valid options, so a typo in a spec is reported with the
list of what the defense accepts. ``"none"`` is the undefended split.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, TypeVar

from splitveil.defenses.base import Defense, NoDefense
from splitveil.errors import ConfigError
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
    parameters = inspect.signature(DEFENSES.get(name)).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


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
    valid = [option for option in defense_options(name) if option != "strength"]
    for option in options:
        if option not in valid:
            close = difflib.get_close_matches(option, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listed = ", ".join(valid) or "none"
            raise ConfigError(f"defense {name!r} has no option {option!r}; valid options: {listed}.{hint}")
    return DEFENSES.get(name)(strength=strength, **options)
