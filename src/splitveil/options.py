"""A component's options, declared once: its keyword-only signature, read as a frozen pydantic model.

Every registered component (model, dataset, attack, defense) takes its options as keyword-only
parameters, each annotated with its type *and its range*::

    def __init__(self, *, strength: NonNegative = 1.0, where: Literal["feature", "input"] = "feature")

That one declaration is the component's options schema. :func:`options_schema` reads it as a frozen
pydantic model (what ``Registry.schema(name)`` returns, what the option tables in the docs are
generated from), and :func:`validate_options` checks a spec's or a caller's values against it: at
spec load, in ``Registry.create`` and, for defenses and attacks, on direct construction too
(:func:`validating_init`). A constructor therefore holds no range checks of its own, only the
checks that relate several options (PATROL's "``flops_budget`` or ``budget_cut``, not both").

We derive the model from the signature rather than write a separate pydantic class beside each
constructor: two declarations of the same options are what drift apart (an option forgotten in one
silently left the cache key), and a component called from Python must accept exactly what a spec
may set.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo

from splitveil.errors import ConfigError

#: A finite number >= 0 (a noise scale, a loss weight, a defense's strength).
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A finite number > 0 (a learning rate, a scale that divides).
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: An integer >= 0 (epochs of fine-tuning, residual blocks).
NonNegativeInt = Annotated[int, Field(ge=0)]
#: An integer >= 1 (steps, epochs, widths, batch sizes).
PositiveInt = Annotated[int, Field(ge=1)]
#: A probability that cannot reach 1 (a drop rate, a label-smoothing ε).
Fraction = Annotated[float, Field(ge=0, lt=1)]

_STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


def factory_options(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only options ``factory`` takes, each with its annotation (``Any`` where unresolved).

    A factory that hands ``**options`` on accepts what their receiver accepts too: for a class, its
    first ancestor that defines ``__init__``; for a function, the class it returns
    (``def lenet(**options) -> LeNet``).
    """
    return {name: annotation for name, (annotation, _) in _declared(factory).items()}


@functools.cache
def options_schema(factory: Callable[..., Any]) -> type[BaseModel]:
    """``factory``'s options as a frozen pydantic model: one field per keyword-only option, with its
    annotated type and range and its default (required where the signature gives none).

    Example:
        >>> from splitveil.defenses import DEFENSES
        >>> schema = options_schema(DEFENSES.get("gaussian-noise"))
        >>> schema().model_dump()
        {'strength': 1.0, 'where': 'feature'}
    """
    fields: dict[str, Any] = {}
    for name, (annotation, default) in _declared(factory).items():
        checkable = annotation if _adapter(annotation) is not None else Any
        fields[name] = (checkable, ... if default is inspect.Parameter.empty else default)
    config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), **_STRICT)
    return create_model(f"{getattr(factory, '__name__', 'Component')}Options", __config__=config, **fields)


def option_bounds(field: FieldInfo) -> dict[str, float]:
    """The numeric bounds a schema field declares, e.g. ``{"ge": 0, "lt": 1}``; ``{}`` for none.

    An optional bounded option (``PositiveInt | None``) keeps its bounds on the union's member.
    """
    rules = list(field.metadata)
    for member in typing.get_args(field.annotation):
        for rule in getattr(member, "__metadata__", ()):
            rules += rule.metadata if isinstance(rule, FieldInfo) else [rule]
    return {
        kind: getattr(rule, kind)
        for rule in rules
        for kind in ("gt", "ge", "lt", "le")
        if getattr(rule, kind, None) is not None
    }


def validate_options(
    component: str,
    factory: Callable[..., Any],
    options: Mapping[str, object],
    *,
    reserved: Mapping[str, str] = {},
) -> dict[str, Any]:
    """``options`` checked against ``factory``'s schema, returned as the values to call it with.

    Raises ConfigError, in one line naming ``component`` (e.g. ``"attack 'rmle'"``), for an option the
    factory does not take, for one the caller sets itself (``reserved`` maps it to where it is set), or
    for a value of the wrong type or out of range. Values are checked strictly (``"300"`` is not an
    int): YAML reads ``1e-3`` as text, and a factory handed text where it expects a number fails only
    when it runs. YAML lists stand for tuples (``widths: [16, 32, 64]``).
    """
    accepted = factory_options(factory)
    valid = [name for name in accepted if name not in reserved]
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name in reserved:
            raise ConfigError(f"{component}: option {name!r} cannot be set here; {reserved[name]}")
        if name not in accepted:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{component} has no option {name!r}; valid options: {', '.join(valid) or 'none'}.{hint}")
        checked[name] = _checked_value(component, name, accepted[name], value)
    return checked


def check_factory_options(
    component: str, factory: Callable[..., Any], options: Mapping[str, object], *, reserved: Mapping[str, str] = {}
) -> None:
    """Raise ConfigError unless ``options`` suit ``factory`` (see :func:`validate_options`)."""
    validate_options(component, factory, options, reserved=reserved)


def validating_init(owner: type, label: Callable[[Any], str]) -> None:
    """Make ``owner.__init__`` check its keyword options against its own signature before it runs.

    Defenses and attacks call this from ``__init_subclass__``, so constructing one directly in Python
    is checked exactly as a spec is. ``label(self)`` names the component in the message.
    """
    init = vars(owner).get("__init__")
    if init is None or getattr(init, "__validates_options__", False):
        return

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **options: Any) -> None:
        init(self, *args, **validate_options(label(self), owner, options))

    checked_init.__validates_options__ = True  # type: ignore[attr-defined]  # a marker, read above
    owner.__init__ = checked_init  # type: ignore[misc]  # wrapping the class's own initialiser is the point


def _checked_value(component: str, name: str, annotation: Any, value: object) -> object:
    adapter = _adapter(annotation)
    if adapter is None:  # pydantic cannot build a check for it; the factory checks its own input
        return value
    candidate = _yaml_lists_as_tuples(annotation, value)
    try:
        adapter.validate_python(candidate, strict=True)
    except ValidationError as exc:
        raise ConfigError(
            f"{component}: option {name}={value!r} is invalid: {_explain(annotation, value, exc)}"
        ) from None
    # The caller's value, not pydantic's copy: a tensor or module option must stay the same object.
    return candidate


def _explain(annotation: Any, value: object, exc: ValidationError) -> str:
    errors = exc.errors()
    plain = [_plainly(error) for error in errors]
    if all(plain):  # a range or a choice: the rule itself is the clearest message
        message = "; ".join(typing.cast("list[str]", plain))
    else:
        details = "; ".join(
            error["msg"] + (f" at item {'.'.join(map(str, error['loc']))}" if error["loc"] else "") for error in errors
        )
        message = f"expected {_type_name(annotation)}: {details}"
    if isinstance(value, str) and _reads_as_number(value):
        exponent = "e" in value.lower() and "." not in value
        message += " (YAML reads 1e-3 as text: write 1.0e-3)" if exponent else " (write the number without quotes)"
    return message


#: pydantic's constraint errors, said as the rule they enforce.
_RULES = {
    "greater_than": "> {gt}",
    "greater_than_equal": ">= {ge}",
    "less_than": "< {lt}",
    "less_than_equal": "<= {le}",
}


def _plainly(error: Any) -> str | None:
    # 0.0 reads as 0 in the rule: the bound, not the float pydantic stored it as
    context = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in error.get("ctx", {}).items()}
    if error["type"] in _RULES:
        return "it must be " + _RULES[error["type"]].format(**context)
    if error["type"] == "finite_number":
        return "it must be a finite number"
    if error["type"] == "literal_error":
        return f"choose one of {context['expected']}"
    return None


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    """A strict validator for ``annotation`` (None: nothing to check, or pydantic cannot check it)."""
    try:
        return _cached_adapter(annotation)
    except TypeError:  # an unhashable annotation: build it uncached
        return _cached_adapter.__wrapped__(annotation)


@functools.cache
def _cached_adapter(annotation: Any) -> TypeAdapter[Any] | None:
    if annotation is Any:
        return None
    try:
        return TypeAdapter(annotation, config=_STRICT)
    except Exception:  # noqa: BLE001 (any annotation pydantic cannot check is left to the factory)
        return None


def _declared(factory: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """Name -> (annotation, default) of ``factory``'s keyword-only options, receivers' included."""
    function = inspect.unwrap(typing.cast("type[Any]", factory).__init__ if isinstance(factory, type) else factory)
    parameters = inspect.signature(function).parameters.values()
    hints = _type_hints(function)
    declared = {
        p.name: (hints.get(p.name, Any), p.default) for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        receiver = _receiver(factory, hints)
        if receiver is not None:
            declared |= {name: spec for name, spec in _declared(receiver).items() if name not in declared}
    return declared


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 (an annotation that does not resolve, e.g. imported for type checkers: unchecked)
        return {}


def _receiver(factory: Callable[..., Any], hints: dict[str, Any]) -> Callable[..., Any] | None:
    if isinstance(factory, type):
        parent = next((base for base in factory.__mro__[1:] if "__init__" in vars(base)), object)
        return None if parent is object else parent
    returned = hints.get("return")
    return returned if isinstance(returned, type) and returned is not factory else None


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _yaml_lists_as_tuples(annotation: Any, value: object) -> object:
    """YAML has no tuples: a list stands for a tuple option such as ``widths: [16, 32, 64]``."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
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
