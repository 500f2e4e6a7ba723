"""``stack``: several defenses deployed together, e.g. SiftFunnel's funnel + bounded noise + dropout.

A stack is declared in a spec like any defense, its layers listed in order under ``options``::

    - name: stack
      strengths: [0.5, 1.0]
      options:
        layers:
          - {name: siftfunnel, options: {funnel_channels: 4, replace_last_conv: true}}
          - {name: bounded-noise, strength: 0.5}
          - {name: feature-dropout, strength: 0.2}

Each layer's strength (default 1) is multiplied by the stack's, so strength 0 is the identity and one
``strengths`` list sweeps the whole stack. The layers apply in order (the first wraps the split, the
next wraps that), their loss terms add up (named ``layer<i>.<term>``), their hooks all run, and their
structural changes are replayed in order when a bundle loads. The stack trains when any layer does.

A layer that keeps a secret on the device (``salted``, output privacy) must come last, so that its
edge is the one the client runs: ``[siftfunnel, bounded-noise, salted]`` hides the input behind the
funnel and the noise and the answer behind the salt. A bundle's cloud half gets every layer's options
without its client secrets (:meth:`Defense.public_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from splitveil.client_side import SecretKeepingEdge
from splitveil.defenses.base import Defense
from splitveil.defenses.registry import DEFENSES, create_defense, register_defense
from splitveil.errors import ConfigError
from splitveil.options import NonNegative
from splitveil.split import SplitModel
from splitveil.train import Batch, TrainHook

_LAYER_KEYS = {"name", "strength", "options"}


@register_defense
class StackDefense(Defense):
    """Defenses applied in order; each layer's strength is scaled by the stack's."""

    name = "stack"

    def __init__(self, *, strength: NonNegative = 1.0, layers: list[Any] | None = None) -> None:
        super().__init__(strength=strength)
        # Each layer's shape is checked below, where the message can show a layer as it should be.
        self.layers = [_checked_layer(index, layer) for index, layer in enumerate(layers or [])]
        for index, layer in enumerate(self.layers[:-1]):
            if _layer_class(layer).client_options:
                # Its edge keeps the secret on the device (salted decodes the answer there); a layer
                # wrapped around that edge would hide it from the client.
                raise ConfigError(
                    f"stack: layer {index} ({layer['name']}) keeps device secrets in its options; "
                    "put it last, after the input defenses"
                )
        self.defenses = [
            create_defense(layer["name"], strength=self.strength * layer["strength"], **layer["options"])
            for layer in self.layers
        ]

    @property
    def requires_training(self) -> bool:  # type: ignore[override]  # a class constant elsewhere; here it depends on the layers
        return any(defense.requires_training for defense in self.defenses)

    def apply(self, split: SplitModel) -> SplitModel:
        for index, defense in enumerate(self.defenses):
            if isinstance(split.edge, SecretKeepingEdge):
                raise ConfigError(
                    f"stack: layer {index - 1} ({self.layers[index - 1]['name']}) keeps a secret on the device, "
                    "which the layers after it would hide from the client; put it last, or deploy it alone"
                )
            split = defense.apply(split)
        return split

    def options(self) -> dict[str, object]:
        # Every layer's options resolved (its defaults written down), so a default changed later
        # cannot leave a stack's cache key or bundle meaning something else.
        return {
            "layers": [
                {"name": layer["name"], "strength": layer["strength"], "options": defense.options()}
                for layer, defense in zip(self.layers, self.defenses, strict=True)
            ]
        }

    @classmethod
    def public_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Every layer's options without its client secrets (a stacked salted layer's key)."""
        layers = options.get("layers")
        if not isinstance(layers, list):
            return dict(options)
        return {**options, "layers": [_public_layer(layer) for layer in layers]}

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for index, defense in enumerate(self.defenses):
            terms |= {f"layer{index}.{name}": value for name, value in defense.loss_terms(batch, z, logits).items()}
        return terms

    def hooks(self) -> list[TrainHook]:
        return [hook for defense in self.defenses for hook in defense.hooks()]

    def finalize(self, split: SplitModel, *, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, object]:
        records = [defense.finalize(split, model=model, input_shape=input_shape) for defense in self.defenses]
        return {"layers": records} if any(records) else {}

    def restore(self, split: SplitModel, record: dict[str, object]) -> None:
        records = record.get("layers", [{}] * len(self.defenses)) if record else [{}] * len(self.defenses)
        if not isinstance(records, list) or len(records) != len(self.defenses):
            raise ValueError(f"stack: the record holds {records!r}, not one entry per layer ({len(self.defenses)})")
        for defense, layer_record in zip(self.defenses, records, strict=True):
            defense.restore(split, layer_record)

    @property
    def finetune_epochs(self) -> int:
        return max((defense.finetune_epochs for defense in self.defenses), default=0)


def _checked_layer(index: int, layer: object) -> dict[str, Any]:
    """A layer as ``{name, strength, options}`` with defaults filled in, or a ConfigError naming the problem."""
    where = f"stack: layer {index}"
    if not isinstance(layer, Mapping):
        raise ConfigError(f"{where} must be a mapping such as {{name: gaussian-noise, strength: 0.5}}, got {layer!r}")
    unknown = set(layer) - _LAYER_KEYS
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(sorted(unknown))}; a layer has name, strength, options"
        )
    name, strength, options = layer.get("name"), layer.get("strength", 1.0), layer.get("options", {})
    if name not in DEFENSES or name in ("none", "stack"):
        raise ConfigError(f"{where}: {name!r} is not a defense to stack; choose one of: {', '.join(_stackable())}")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not strength >= 0:
        raise ConfigError(f"{where} ({name}): strength must be a number >= 0, got {strength!r}")
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} ({name}): options must be a mapping, got {options!r}")
    return {"name": name, "strength": float(strength), "options": dict(options)}


def _layer_class(layer: Mapping[str, Any]) -> type[Defense]:
    return cast(type[Defense], DEFENSES.get(str(layer["name"])))  # defenses register Defense classes


def _public_layer(layer: object) -> object:
    """A layer's mapping without its defense's client options (anything malformed is left to the checks)."""
    if (
        not isinstance(layer, Mapping)
        or layer.get("name") not in DEFENSES
        or not isinstance(layer.get("options"), Mapping)
    ):
        return layer
    return {**layer, "options": _layer_class(layer).public_options(dict(layer["options"]))}


def _stackable() -> list[str]:
    return [name for name in DEFENSES.names() if name not in ("none", "stack")]
