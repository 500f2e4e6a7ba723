"""A bundle half's ``meta.json``: read with a size cap and checked field by field before use.

A cloud server builds its model from this file and sizes its body limit by ``feature_shape``; an
edge client bounds the answers it accepts by ``num_classes``. Trusted as written, a tampered file
raised a server's body limit to 258 TB, so every field a loader reads is checked here first: types,
positive sizes, caps far above any model of the zoo. Each refusal is one line that names the file
and the field. Whether the fields agree with the weights and with each other is checked when the
half is built (:func:`splitveil.serve.bundle.load_half`).
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from math import prod
from pathlib import Path
from typing import Any

from splitveil.checkpoint import METADATA_FILE
from splitveil.errors import CheckpointError
from splitveil.plugins import is_module_name, require_imported
from splitveil.serve.codec import MAX_CLASSES, MAX_NDIM

#: A bundle's metadata is a few kilobytes; a megabyte is not a bundle's.
MAX_METADATA_BYTES = 1 << 20
#: Values per sample crossing the wire: 16 MiB of float32, far above any cut of the zoo.
MAX_FEATURE_ELEMENTS = 1 << 22
#: Values per input image (3 x 2048 x 2048 fits).
MAX_INPUT_ELEMENTS = 1 << 24
#: Every integer a zoo model takes is a width, a size or a count.
MAX_MODEL_INTEGER = 1 << 16
#: Items of a list or object anywhere in an option's value, and how deep such values nest.
MAX_OPTION_ITEMS = 64
_MAX_OPTION_DEPTH = 4
_MAX_TEXT = 4096  # a name, a cut, a salt key: far shorter
_FIX = "export the bundle again with `splitveil export`"
_UNSET: Any = object()  # "read the field": None is a value a file can hold


def read_bundle_metadata(directory: Path) -> dict[str, Any]:
    """The JSON object in ``directory/meta.json``, read only if it is no larger than a bundle's can be."""
    path = directory / METADATA_FILE
    try:
        with path.open("rb") as file:
            text = file.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint metadata at {path}; {_FIX}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read bundle file {path}: {exc.strerror or exc}; {_FIX}") from None
    if len(text) > MAX_METADATA_BYTES:
        raise CheckpointError(f"bundle file {path} is larger than {MAX_METADATA_BYTES} bytes; {_FIX}")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"bundle file {path} is not valid JSON ({_clip(exc)}); {_FIX}") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"bundle file {path} holds a JSON {type(metadata).__name__}, not an object; {_FIX}")
    return metadata


def check_bundle_metadata(metadata: dict[str, Any], path: Path) -> None:
    """Refuse ``metadata`` (read from ``path``) unless every field a loader reads is well-formed."""
    field = _FieldChecker(metadata, path)
    plugins = metadata.get("plugins", [])  # absent in bundles written before plugins existed
    if not (isinstance(plugins, list) and len(plugins) <= MAX_OPTION_ITEMS and all(map(is_module_name, plugins))):
        field.refuse("plugins", f"must be a list of module names, not {_clip(plugins)}")
    require_imported(plugins, where=f"bundle file {path}")  # before any name is looked up
    field.model_name()
    field.options("spec.model.options", max_integer=MAX_MODEL_INTEGER)
    field.text("cut")
    field.shape("input_shape", length=(3, 3), max_elements=MAX_INPUT_ELEMENTS)
    classes = field.integer("num_classes", low=1, high=MAX_CLASSES)
    names = field.value("class_names")
    if not (isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names)):
        field.refuse("class_names", f"must list num_classes={classes} names")
    field.shape("feature_shape", length=(1, MAX_NDIM - 1), max_elements=MAX_FEATURE_ELEMENTS)
    strength = field.value("strength")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength < math.inf:
        field.refuse("strength", f"must be a finite number >= 0, not {_clip(strength)}")
    field.object("finalize")
    if field.value("defense") is not None:
        field.text("defense.name")
        field.options("defense.options", max_integer=None)


class _FieldChecker:
    """Reads dotted fields of one metadata object; every refusal names the file and the field."""

    def __init__(self, metadata: dict[str, Any], path: Path) -> None:
        self.metadata = metadata
        self.path = path

    def refuse(self, field: str, problem: str) -> typing.NoReturn:
        raise CheckpointError(f"bundle file {self.path}: {field} {problem}; {_FIX}")

    def value(self, field: str) -> Any:
        value: Any = self.metadata
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                self.refuse(field, "is missing")
            value = value[part]
        return value

    def object(self, field: str) -> dict[str, Any]:
        value = self.value(field)
        if not isinstance(value, dict):
            self.refuse(field, f"must be a JSON object, not {_clip(value)}")
        return value

    def text(self, field: str) -> str:
        value = self.value(field)
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
            self.refuse(field, f"must be a non-empty string, not {_clip(value)}")
        return value

    def integer(self, field: str, *, low: int, high: int, value: Any = _UNSET) -> int:
        value = self.value(field) if value is _UNSET else value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.refuse(field, f"must be an integer from {low} to {high}, not {_clip(value)}")
        return value

    def shape(self, field: str, *, length: tuple[int, int], max_elements: int) -> None:
        value = self.value(field)
        shortest, longest = length
        if not isinstance(value, list) or not shortest <= len(value) <= longest:
            count = str(shortest) if shortest == longest else f"{shortest} to {longest}"
            self.refuse(field, f"must list {count} sizes, not {_clip(value)}")
        for size in value:
            self.integer(field, low=1, high=max_elements, value=size)
        if prod(value) > max_elements:
            self.refuse(field, f"{value} holds {prod(value)} values per sample, more than the {max_elements} allowed")

    def model_name(self) -> None:
        from splitveil.models import MODELS

        name = self.text("spec.model.name")
        if name not in MODELS:
            self.refuse("spec.model.name", f"{name!r} is not a model of this version (it has: {', '.join(MODELS)})")
        declared = _declared_model_options(MODELS.get(name))
        options = self.object("spec.model.options")
        unknown = sorted(set(options) - declared) if declared is not None else []
        if unknown:
            takes = ", ".join(sorted(declared or ())) or "none"
            self.refuse(
                "spec.model.options", f"has {unknown[0]!r}, which model {name!r} does not take (it takes: {takes})"
            )

    def options(self, field: str, *, max_integer: int | None) -> None:
        for key, value in self.object(field).items():
            self._option_value(f"{field}.{key}", value, max_integer, depth=0)

    def _option_value(self, field: str, value: Any, max_integer: int | None, depth: int) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int):
            low, high = (0, max_integer) if max_integer is not None else (-(1 << 63), (1 << 63) - 1)
            self.integer(field, low=low, high=high, value=value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.refuse(field, f"must be finite, not {value}")
        elif isinstance(value, str):
            if len(value) > _MAX_TEXT:
                self.refuse(field, f"is a string of {len(value)} characters, more than {_MAX_TEXT}")
        elif isinstance(value, list | dict):
            if len(value) > MAX_OPTION_ITEMS or depth >= _MAX_OPTION_DEPTH:
                self.refuse(field, f"nests more than {MAX_OPTION_ITEMS} items or {_MAX_OPTION_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                self._option_value(f"{field}.{key}", item, max_integer, depth + 1)


def _declared_model_options(factory: Any) -> frozenset[str] | None:
    """The keyword options of the model class ``factory`` builds (None when it does not say which)."""
    try:
        built = typing.get_type_hints(factory).get("return")
    except Exception:  # an annotation that does not resolve: nothing to compare against
        return None
    if not inspect.isclass(built):
        return None
    parameters = inspect.signature(built).parameters.values()
    names = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return frozenset(names - {"input_shape", "num_classes"})


def _clip(value: Any, limit: int = 60) -> str:
    """``value`` as a short one-line text, for messages about a file nobody vouches for."""
    text = " ".join(repr(value).split()) if not isinstance(value, BaseException) else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
