"""The attack registry: ``create_attack(name, view, **options)`` with options checked by name.

Every registered attack is a class whose ``__init__(self, view, *, seed, progress, ...)`` takes
only keyword options; those keyword names are the attack's valid options, so a typo in a spec is
reported with the list of what the attack accepts (Python's own TypeError would name only the typo).
A subclass that adds options and passes the rest on as ``**options`` accepts its parents' too.
Specs check their attacks' options (names and annotated types) when they load, with
:func:`check_attack_options`: a typo then fails in a second, not after a sweep's training.
"""

from __future__ import annotations

from typing import Any

from splitveil.attacks.base import Attack, AttackerView
from splitveil.registry import Registry, check_factory_options, factory_options

ATTACKS: Registry[Attack] = Registry("attack")

#: Options the audit passes to every attack itself, so a spec's ``options`` cannot set them.
RUN_OPTIONS = {
    "seed": "the run passes the spec's top-level `seed`",
    "progress": "the run passes it (--progress / --no-progress)",
}


def attack_options(name: str) -> list[str]:
    """The keyword options the attack registered as ``name`` accepts (``seed`` and ``progress`` included)."""
    return list(factory_options(ATTACKS.get(name)))


def check_attack_options(name: str, options: dict[str, Any]) -> None:
    """Raise ConfigError unless a spec's ``options`` suit attack ``name``: known names, values of the
    declared types, none of the :data:`RUN_OPTIONS`. Specs call it when they load, before any training."""
    check_factory_options(f"attack {name!r}", ATTACKS.get(name), options, reserved=RUN_OPTIONS)


def create_attack(name: str, view: AttackerView, **options: Any) -> Attack:
    """Build the attack registered as ``name`` against ``view``.

    Raises:
        UnknownNameError: no attack is registered as ``name``.
        ConfigError: an option is not one the attack accepts (the message lists the valid ones), or
            its value is of the wrong type or out of range.
        CapabilityError: ``view`` lacks a capability the attack requires.
    """
    return ATTACKS.create(name, view, **options)
