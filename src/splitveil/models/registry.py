"""The model zoo registry: ``create_model(name, input_shape=..., num_classes=...)``."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from splitveil.errors import ConfigError
from splitveil.registry import Registry, check_factory_options

MODELS: Registry[nn.Module] = Registry("model")

#: Options every model takes from the data, so a spec's ``model.options`` cannot set them.
DATA_OPTIONS = {
    "input_shape": "it follows the dataset (`data.name`)",
    "num_classes": "it follows the dataset (`data.name`)",
}


def create_model(
    name: str,
    *,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    **options: Any,
) -> nn.Module:
    """Build the zoo model ``name`` for images of ``input_shape`` (C, H, W) and ``num_classes``.

    Every zoo model has a ``cut_points`` attribute: the named cuts, shallowest first.

    Example:
        >>> model = create_model("lenet", input_shape=(1, 28, 28), num_classes=10)
        >>> list(model.cut_points)[:3]
        ['conv1', 'relu1', 'pool1']
    """
    return MODELS.create(name, input_shape=tuple(input_shape), num_classes=num_classes, **options)


#: A spec's model is refused above this many parameters (4 GiB of float32 weights): options such as
#: ``widths: [100000, ...]`` would otherwise fail only when the weights are allocated, or exhaust memory.
MAX_PARAMETERS = 1 << 30


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """Raise ConfigError unless a spec's ``options`` suit model ``name``: known names, annotated types,
    and values the model can be built with. A spec's options are checked when it loads, before any
    training, so the model is built on the meta device (no memory) at its default input shape."""
    import torch

    check_factory_options(f"model {name!r}", MODELS.get(name), options, reserved=DATA_OPTIONS)
    try:
        # Meta tensors hold no memory; torch warns that initialising them does nothing, which is the point.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = MODELS.create(name, **options)
    except (ValueError, TypeError, RuntimeError) as exc:  # e.g. a negative width, a dropout above 1
        raise ConfigError(
            f"model {name!r} cannot be built with options {options} ({' '.join(str(exc).split())})"
        ) from None
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            f"model {name!r} with options {options} has {parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} a spec may ask for; give smaller widths"
        )


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    return MODELS.names(pattern)
