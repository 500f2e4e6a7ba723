"""A small typed registry: models, datasets, attacks, defenses and metrics are looked up by name.

Specs and the CLI name components as strings; tests iterate over ``names()`` so that a newly
registered component is covered by the conformance tests without new test code. A factory's
keyword-only parameters are its options (:func:`factory_options`), so a spec's options can be
checked when the spec loads (:func:`check_factory_options`) rather than when the factory runs,
which in a sweep is after minutes of training.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from splitveil.errors import ConfigError, UnknownNameError

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


def factory_options(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only options ``factory`` takes, each with its annotation (``Any`` where unresolved).

    A factory that hands ``**options`` on accepts what their receiver accepts too: for a class, its
    first ancestor that defines ``__init__``; for a function, the class it returns
    (``def lenet(**options) -> LeNet``).
    """
    parameters = inspect.signature(factory).parameters.values()
    # type[Any], not the instance type `type` isinstance narrows to, for mypy to allow reading __init__
    hints = _type_hints(typing.cast("type[Any]", factory).__init__ if isinstance(factory, type) else factory)
    options = {p.name: hints.get(p.name, Any) for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        receiver = _receiver(factory, hints)
        if receiver is not None:
            options |= {name: hint for name, hint in factory_options(receiver).items() if name not in options}
    return options


def check_factory_options(
    component: str, factory: Callable[..., Any], options: Mapping[str, object], *, reserved: Mapping[str, str] = {}
) -> None:
    """Raise ConfigError for an option ``factory`` does not take, for one the caller sets itself
    (``reserved`` maps it to where it is set), or for a value of the wrong type.

    ``component`` names the factory in the message, e.g. ``"attack 'rmle'"``. Values are checked
    strictly (``"300"`` is not an int): YAML reads ``1e-3`` as text, and a factory handed text where
    it expects a number fails only when it runs.
    """
    accepted = factory_options(factory)
    valid = [name for name in accepted if name not in reserved]
    for name, value in options.items():
        if name in reserved:
            raise ConfigError(f"{component}: option {name!r} cannot be set here; {reserved[name]}")
        if name not in accepted:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{component} has no option {name!r}; valid options: {', '.join(valid) or 'none'}.{hint}")
        problem = _type_problem(accepted[name], value)
        if problem is not None:
            raise ConfigError(f"{component}: option {name}={value!r} is invalid: {problem}")


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve (an import only for type checkers): unchecked
        return {}


def _receiver(factory: Callable[..., Any], hints: dict[str, Any]) -> Callable[..., Any] | None:
    if isinstance(factory, type):
        parent = next((base for base in factory.__mro__[1:] if "__init__" in vars(base)), object)
        return None if parent is object else parent
    returned = hints.get("return")
    return returned if isinstance(returned, type) and returned is not factory else None


def _type_problem(annotation: Any, value: object) -> str | None:
    """Why ``value`` does not fit ``annotation`` (None: it fits, or the annotation cannot be checked)."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    if annotation is Any:
        return None
    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # pydantic cannot build a check for it; the factory checks its own input
        return None
    try:
        adapter.validate_python(_yaml_lists_as_tuples(annotation, value), strict=True)
    except ValidationError as exc:
        details = "; ".join(
            error["msg"] + (f" at item {'.'.join(map(str, error['loc']))}" if error["loc"] else "")
            for error in exc.errors()
        )
        literal = typing.get_origin(annotation) is typing.Literal  # its message already lists the choices
        message = details if literal else f"expected {_type_name(annotation)}: {details}"
        if isinstance(value, str) and _reads_as_number(value):
            exponent = "e" in value.lower() and "." not in value
            message += " (YAML reads 1e-3 as text: write 1.0e-3)" if exponent else " (write the number without quotes)"
        return message
    return None


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _yaml_lists_as_tuples(annotation: Any, value: object) -> object:
    """YAML has no tuples: a list stands for a tuple option such as ``widths: [16, 32, 64]``."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if union else (annotation,)
    if isinstance(value, list) and any(typing.get_origin(c) is tuple for c in candidates):
        return tuple(value)
    return value


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
