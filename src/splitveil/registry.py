"""A small typed registry: models, datasets, attacks, defenses and metrics are looked up by name.

Specs and the CLI name components as strings; tests iterate over ``names()`` so that a newly
registered component is covered by the conformance tests without new test code. A factory's
keyword-only parameters, annotated with their types and ranges, are its options schema
(:mod:`splitveil.options`): :meth:`Registry.schema` reads it as a frozen pydantic model and
:meth:`Registry.create` validates against it, as a spec does when it loads
(:func:`check_factory_options`) rather than when the factory runs, which in a sweep is after
minutes of training.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from splitveil.errors import UnknownNameError
from splitveil.options import check_factory_options, factory_options, options_schema, validate_options

__all__ = ["Registry", "check_factory_options", "factory_options"]

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
        >>> animals.schema("cat")().model_dump()
        {'loud': False}
        >>> animals.names("c*")
        ['cat']
        >>> @animals.register("dog", legs=4)
        ... def make_dog() -> str:
        ...     return "woof"
        >>> animals.info("dog")["legs"]
        4
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._info: dict[str, Mapping[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; a duplicate name is an error.

        ``info`` is the entry's metadata, queryable with :meth:`info` without calling the factory
        (a model's ``cut_points``, say, without building the model).
        """

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            self._info[name] = MappingProxyType(dict(info))
            return factory

        return decorate

    def info(self, name: str) -> Mapping[str, Any]:
        """The metadata ``name`` was registered with (read-only; empty if none was given)."""
        self.get(name)  # an unknown name is the same clear error as for get()
        return self._info[name]

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; unknown names list the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def schema(self, name: str) -> type[BaseModel]:
        """The options of ``name`` as a frozen pydantic model, read from its factory's signature.

        ``schema(name)().model_dump()`` is the entry's defaults; ``model_json_schema()`` documents it.
        """
        return options_schema(self.get(name))

    def create(self, name: str, *args: Any, **config: Any) -> T:
        """Call the factory registered as ``name`` with ``args`` and keyword-only ``config``, once
        ``config`` has been validated against the entry's options (ConfigError in one line if not)."""
        factory = self.get(name)
        return factory(*args, **validate_options(f"{self.kind} {name!r}", factory, config))

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
