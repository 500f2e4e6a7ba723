"""The Defense protocol: one object used in training, in the audit and in serving.

A defense *wraps and returns* (``apply(split) -> split``): it may put modules around the edge
(noise, dropout, masks) or the cloud, and it may contribute loss terms and training hooks to the
one training loop (``splitveil.train.fit``). It never owns a loop. Because attacks are built from
the split a defense returns, every attacker sees exactly the edge that is deployed.

``strength`` is each defense's one knob (noise σ, dropout rate, regulariser weight...). Strength
zero is the identity: ``apply`` changes no output and ``loss_terms`` contribute nothing (tested for
every registered defense).
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

import torch
from torch import nn

from splitveil.options import NonNegative, factory_options, validating_init
from splitveil.split import SplitModel
from splitveil.train import Batch, TrainHook


class Defense(ABC):  # noqa: B024 (every method has a default; subclasses override what they need)
    """Base class of every defense; subclasses override what they need."""

    #: Options that are client secrets (a salt key): a deployment keeps them out of the cloud's files.
    client_options: tuple[str, ...] = ()
    #: The name the defense is registered under (``describe()["defense"]``); empty: the class name.
    name: ClassVar[str] = ""

    #: Whether the model must be (re)trained with this defense's loss terms and hooks for it to work.
    #: Inference-time defenses (noise on a trained model) leave this False.
    requires_training: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A defense built in Python is checked as one in a spec is: against its annotated options.
        validating_init(cls, Defense._label)

    def __init__(self, *, strength: NonNegative = 1.0) -> None:
        self.strength = float(strength)

    def apply(self, split: SplitModel) -> SplitModel:
        """Return the deployed split: ``split`` with this defense's modules around its halves."""
        return split

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Regularisers added to the task loss during training (names become the loop's log keys)."""
        return {}

    def hooks(self) -> list[TrainHook]:
        """Training hooks, e.g. an adversary's alternating step in min-max training."""
        return []

    def finalize(self, split: SplitModel, *, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, object]:
        """Transform the trained, deployed ``split`` in place after training (PATROL prunes here).

        ``model`` is the unsplit architecture ``split`` was cut from (its weights do not matter), for
        budgets stated relative to another cut. Returns a JSON-serialisable record from which
        :meth:`restore` replays the same structural change on a freshly built split before its saved
        weights are loaded; ``{}`` (the default) means nothing changed and nothing is fine-tuned.
        """
        return {}

    def restore(self, split: SplitModel, record: dict[str, object]) -> None:
        """Replay :meth:`finalize`'s structural change (from its ``record``) on a fresh ``apply``'d split."""
        if record:
            raise NotImplementedError(f"{self._label()} recorded a structural change but cannot restore it")

    @property
    def finetune_epochs(self) -> int:
        """Epochs of fine-tuning (same loss terms and hooks) after :meth:`finalize` changed the split."""
        return 0

    def options(self) -> dict[str, object]:
        """The defense's settings other than ``strength`` (recorded by :meth:`describe`, hence in cache
        keys and bundles): every keyword option of the constructor, read from the attribute of the same
        name. A defense that keeps an option under another name overrides this; the conformance suite
        checks that every option is recorded."""
        names = [name for name in factory_options(type(self)) if name != "strength"]
        missing = [name for name in names if not hasattr(self, name)]
        if missing:
            raise NotImplementedError(
                f"{self._label()} keeps option(s) {', '.join(missing)} under other names; override options()"
            )
        return {name: getattr(self, name) for name in names}

    @classmethod
    def public_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` as the cloud may see them: without the :attr:`client_options` (a bundle's cloud half)."""
        return {name: value for name, value in options.items() if name not in cls.client_options}

    def describe(self) -> dict[str, object]:
        """Name and settings, recorded with every result and in checkpoint cache keys."""
        return {"defense": self._label(), "strength": self.strength, **self.options()}

    def _label(self) -> str:
        return self.name or type(self).__name__


# The base's own initialiser is checked too, for the defenses that add no option of their own.
validating_init(Defense, Defense._label)


class NoDefense(Defense):
    """The undefended split (registered as ``"none"``): the identity at every strength."""

    name = "none"


def wrap_edge(
    split: SplitModel, after_edge: nn.Module | None = None, *, before_edge: nn.Module | None = None
) -> SplitModel:
    """A new split whose edge is ``[before_edge →] split.edge [→ after_edge]``; the cloud is shared."""
    layers = [module for module in (before_edge, split.edge, after_edge) if module is not None]
    edge = nn.Sequential(*layers)
    wrapped = SplitModel(edge, split.cloud, cut_name=split.cut_name)
    # New containers start in train mode; copy the split's flags without recursing, so the shared
    # halves keep exactly the modes they had (the added modules behave alike in both modes).
    edge.training, wrapped.training = split.edge.training, split.training
    return wrapped
