"""A small typed registry: models, datasets, attacks, defenses and metrics are looked up by name.

Specs and the CLI name components as strings; tests iterate over ``names()`` so that a newly
registered component is covered by the conformance tests without new test code.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from splitveil.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions returning ``T``).

    Example:
        >>> animals: Registry[str] = Registry("animal")
        >>> @animals.register("cat")
        ... def make_cat(*, loud: bool = False) -> str:
        ...     return "MEOW" if loud else "meow"
        >>> animals.create("cat", loud=True)
        'MEOW'
        >>> animals.names("c*")
        ['cat']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; a duplicate name is an error."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; unknown names list the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def create(self, name: str, **config: Any) -> T:
        """Call the factory registered as ``name`` with keyword-only ``config``."""
        return self.get(name)(**config)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}.{hint}"
