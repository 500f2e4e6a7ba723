"""The option tables of docs/attacks.md and docs/defenses.md, generated from the constructors.

A component's options are the keyword arguments of its constructor (:func:`splitveil.registry.
factory_options`), with their annotated types and defaults: the same declaration the spec loader
checks options against. The tables between ``<!-- options:KIND -->`` and ``<!-- /options -->`` in the
docs are this module's output; a test fails when they drift, and ``python -m splitveil.option_docs``
rewrites them.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

from splitveil.registry import Registry, factory_options

#: Options set by the run, not by a spec's ``options`` (an attack's seed and progress, a defense's strength).
_SET_BY_THE_RUN = {"attacks": {"seed", "progress"}, "defenses": {"strength"}}
_BLOCK = re.compile(r"(<!-- options:(?P<kind>\w+) -->\n).*?(<!-- /options -->)", re.S)


def _registry(kind: str) -> Registry[Any]:
    if kind == "attacks":
        from splitveil.attacks import ATTACKS

        return ATTACKS
    if kind == "defenses":
        from splitveil.defenses import DEFENSES

        return DEFENSES
    raise ValueError(f"no option table for {kind!r}; kinds: {', '.join(_SET_BY_THE_RUN)}")


def options_table(kind: str) -> str:
    """A markdown table of every registered component of ``kind`` and its options, types and defaults."""
    registry = _registry(kind)
    lines = ["| name | option | type | default |", "|---|---|---|---|"]
    for name in registry.names():
        factory = registry.get(name)
        defaults = _defaults(factory)
        options = [o for o in factory_options(factory).items() if o[0] not in _SET_BY_THE_RUN[kind]]
        if not options:
            lines.append(f"| `{name}` | — | | |")
        for option, annotation in options:
            default = defaults.get(option, inspect.Parameter.empty)
            shown = "required" if default is inspect.Parameter.empty else f"`{default!r}`"
            lines.append(f"| `{name}` | `{option}` | {_type_name(annotation)} | {shown} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every ``<!-- options:KIND -->`` block replaced by the current table."""
    return _BLOCK.sub(lambda match: match.group(1) + options_table(match["kind"]) + match.group(3), text)


def _defaults(factory: Any) -> dict[str, Any]:
    """Keyword defaults of ``factory`` and of the ancestors its ``**options`` reach (the nearest wins)."""
    found: dict[str, Any] = {}
    if isinstance(factory, type):
        chain = [vars(k)["__init__"] for k in factory.__mro__ if "__init__" in vars(k)]
    else:
        chain = [factory]
    for function in chain:
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                found.setdefault(parameter.name, parameter.default)
    return found


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(f"`{value!r}`" for value in typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("|", "or")


def main(paths: list[str]) -> None:
    for path in map(Path, paths or ["docs/attacks.md", "docs/defenses.md"]):
        path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
