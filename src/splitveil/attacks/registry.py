"""The attack registry: ``create_attack(name, view, **options)`` with options checked by name.

Every registered attack is a class whose ``__init__(self, view, *, seed, progress, ...)`` takes
only keyword options; those keyword names are the attack's valid options, so a typo in a spec is
reported with the list of what the attack accepts (Python's own TypeError would name only the typo).
A subclass that adds options and passes the rest on as ``**options`` accepts its parents' too.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from splitveil.attacks.base import Attack, AttackerView
from splitveil.errors import ConfigError
from splitveil.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")


def attack_options(name: str) -> list[str]:
    """The keyword options the attack registered as ``name`` accepts (``seed`` and ``progress`` included)."""
    return _keyword_options(ATTACKS.get(name))


def _keyword_options(factory: Any) -> list[str]:
    parameters = inspect.signature(factory).parameters.values()
    names = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if isinstance(factory, type) and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        # **options are handed to the parent's __init__: the first ancestor that defines one.
        parent = next((base for base in factory.__mro__[1:] if "__init__" in vars(base)), None)
        if parent is not None and parent is not object:
            names += [name for name in _keyword_options(parent) if name not in names]
    return names


def create_attack(name: str, view: AttackerView, **options: Any) -> Attack:
    """Build the attack registered as ``name`` against ``view``.

    Raises:
        UnknownNameError: no attack is registered as ``name``.
        ConfigError: an option is not one the attack accepts (the message lists the valid ones).
        CapabilityError: ``view`` lacks a capability the attack requires.
    """
    valid = attack_options(name)
    for option in options:
        if option not in valid:
            close = difflib.get_close_matches(option, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"attack {name!r} has no option {option!r}; valid options: {', '.join(valid)}.{hint}")
    return ATTACKS.get(name)(view, **options)
