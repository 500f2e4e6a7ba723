"""The option tables of docs/attacks.md and docs/defenses.md, generated from the options schemas.

A component's options schema is read from its constructor's keyword arguments, with their annotated
types, ranges and defaults (``Registry.schema``, :mod:`splitveil.options`): the same declaration
the spec loader and ``Registry.create`` check options against. The tables between ``<!-- options:KIND -->`` and ``<!-- /options -->`` in the
docs are this module's output; a test fails when they drift, and ``python -m splitveil.option_docs``
rewrites them.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic.fields import FieldInfo

from splitveil.options import option_bounds
from splitveil.registry import Registry

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
    """A markdown table of every registered component of ``kind`` and its options: type, range, default."""
    registry = _registry(kind)
    lines = ["| name | option | type | range | default |", "|---|---|---|---|---|"]
    for name in registry.names():
        fields = registry.schema(name).model_fields
        options = [(option, field) for option, field in fields.items() if option not in _SET_BY_THE_RUN[kind]]
        if not options:
            lines.append(f"| `{name}` | — | | | |")
        for option, field in options:
            shown = "required" if field.is_required() else f"`{field.default!r}`"
            lines.append(f"| `{name}` | `{option}` | {_type_name(field.annotation)} | {_range(field)} | {shown} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every ``<!-- options:KIND -->`` block replaced by the current table."""
    return _BLOCK.sub(lambda match: match.group(1) + options_table(match["kind"]) + match.group(3), text)


def _range(field: FieldInfo) -> str:
    """The field's bounds, e.g. ``>= 0`` or ``>= 0, < 1``; empty when it has none."""
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{symbols[kind]} {bound:g}" for kind, bound in option_bounds(field).items())


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "any"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(f"`{value!r}`" for value in typing.get_args(annotation))
    if typing.get_origin(annotation) is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if _is_union(annotation):
        return " or ".join(_type_name(member) for member in typing.get_args(annotation))
    return str(annotation).replace("typing.", "")


def main(paths: list[str]) -> None:
    for path in map(Path, paths or ["docs/attacks.md", "docs/defenses.md"]):
        path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
