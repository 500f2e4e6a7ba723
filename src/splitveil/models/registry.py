"""The model zoo registry: ``create_model(name, input_shape=..., num_classes=...)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from splitveil.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


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


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    return MODELS.names(pattern)
