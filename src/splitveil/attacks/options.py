"""Validation of attack options: a bad value is a :class:`ConfigError` that names the valid ones.

Attack options arrive from YAML specs as plain values, so a ``Literal`` annotation alone checks
nothing at run time; these helpers turn a typo into one clear line instead of a late failure.
"""

from __future__ import annotations

from collections.abc import Iterable

from splitveil.errors import ConfigError


def check_choice(option: str, value: object, choices: Iterable[object]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ConfigError(f"option {option}={value!r} is invalid; choose one of: {', '.join(map(repr, allowed))}")


def check_positive(**values: float | int | None) -> None:
    """Raise ConfigError for any given value that is not > 0 (``None`` means "use the default")."""
    for option, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"option {option}={value!r} is invalid; it must be > 0")


def check_non_negative(**values: float | int | None) -> None:
    """Raise ConfigError for any given value that is < 0 (``None`` means "use the default")."""
    for option, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"option {option}={value!r} is invalid; it must be >= 0")
