"""The threat model as code: what an attacker may use, and the protocol every attack follows.

An honest-but-curious cloud receives ``z = edge(x)``. What else it has depends on the threat model:
the edge's weights (white-box), the ability to query the edge with inputs of its choice
(black-box), the cloud half it runs anyway, auxiliary data from the task's distribution. An
:class:`AttackerView` holds exactly the granted capabilities; reading anything else raises
:class:`CapabilityError`, and so does constructing an attack whose ``requires`` the view lacks.

Every view is built from the split *as deployed*: with its defense applied, so noise is sampled as
at deployment and any attack trained on queries is adaptive by construction.
"""

from __future__ import annotations

import copy
import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import ClassVar, cast

import torch
from torch import nn

from splitveil.data import ImageSet
from splitveil.errors import CapabilityError
from splitveil.options import validating_init
from splitveil.split import SplitModel


class Capability(enum.Enum):
    """What an attacker may have besides the transmitted features."""

    EDGE_WEIGHTS = "edge weights"  # the deployed edge module, differentiable (white-box)
    EDGE_ARCHITECTURE = "edge architecture"  # a freshly initialised copy of the edge: structure, no weights
    EDGE_QUERIES = "edge queries"  # edge(x) for inputs of the attacker's choice, no gradients
    CLOUD_MODEL = "cloud model"  # the cloud half (the curious cloud runs it)
    AUX_DATA = "auxiliary data"  # labelled images from the task's distribution, disjoint from the target's
    # The true labels of the attacked inputs, in the order their features are inverted. No real
    # attacker has them: only the label oracle, which measures what the answer alone gives away.
    TARGET_LABELS = "target labels"


class AttackerView:
    """Exactly the granted capabilities of one attacker, plus the shape of the inputs."""

    def __init__(
        self,
        *,
        capabilities: Iterable[Capability],
        input_shape: tuple[int, int, int],
        edge: nn.Module | None = None,
        edge_architecture: nn.Module | None = None,
        query: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cloud: nn.Module | None = None,
        aux: ImageSet | None = None,
        target_labels: torch.Tensor | None = None,
    ) -> None:
        self.capabilities = frozenset(capabilities)
        self.input_shape = input_shape
        self._granted = {
            Capability.EDGE_WEIGHTS: edge,
            Capability.EDGE_ARCHITECTURE: edge_architecture,
            Capability.EDGE_QUERIES: query,
            Capability.CLOUD_MODEL: cloud,
            Capability.AUX_DATA: aux,
            Capability.TARGET_LABELS: target_labels,
        }
        for capability in self.capabilities:
            if self._granted[capability] is None:
                raise ValueError(f"capability {capability.value!r} granted but nothing was provided for it")

    @classmethod
    def of(
        cls,
        split: SplitModel,
        capabilities: Iterable[Capability],
        *,
        input_shape: tuple[int, int, int],
        aux: ImageSet | None = None,
        target_labels: torch.Tensor | None = None,
    ) -> AttackerView:
        """A view of the deployed ``split`` that grants ``capabilities`` and nothing more.

        ``target_labels`` are the true labels of the inputs whose features will be inverted, granted
        only to an attack that requires :attr:`Capability.TARGET_LABELS` (an oracle)."""
        capabilities = frozenset(capabilities)
        deployed_edge = split.edge
        return cls(
            capabilities=capabilities,
            input_shape=input_shape,
            edge=deployed_edge if Capability.EDGE_WEIGHTS in capabilities else None,
            edge_architecture=_reinitialised(deployed_edge) if Capability.EDGE_ARCHITECTURE in capabilities else None,
            query=_query_function(deployed_edge) if Capability.EDGE_QUERIES in capabilities else None,
            cloud=split.cloud if Capability.CLOUD_MODEL in capabilities else None,
            aux=aux if Capability.AUX_DATA in capabilities else None,
            target_labels=target_labels if Capability.TARGET_LABELS in capabilities else None,
        )

    def _get(self, capability: Capability) -> object:
        # What __init__ took for ``capability``; the accessors below cast it back to that argument's type.
        if capability not in self.capabilities:
            granted = ", ".join(sorted(c.value for c in self.capabilities)) or "nothing"
            raise CapabilityError(f"this attacker has no {capability.value} (granted: {granted})")
        return self._granted[capability]

    @property
    def edge(self) -> nn.Module:
        return cast(nn.Module, self._get(Capability.EDGE_WEIGHTS))

    @property
    def edge_architecture(self) -> nn.Module:
        return cast(nn.Module, self._get(Capability.EDGE_ARCHITECTURE))

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """The deployed edge's output for attacker-chosen inputs ``x`` (no gradients)."""
        query = cast(Callable[[torch.Tensor], torch.Tensor], self._get(Capability.EDGE_QUERIES))
        return query(x)

    @property
    def cloud(self) -> nn.Module:
        return cast(nn.Module, self._get(Capability.CLOUD_MODEL))

    @property
    def aux(self) -> ImageSet:
        return cast(ImageSet, self._get(Capability.AUX_DATA))

    @property
    def target_labels(self) -> torch.Tensor:
        return cast(torch.Tensor, self._get(Capability.TARGET_LABELS))


class Attack(ABC):
    """A model inversion attack: ``fit()`` on what the view grants, then ``invert(z) -> x_hat``.

    Subclasses declare ``requires``; constructing one with a view that lacks any of them raises
    :class:`CapabilityError` naming what is missing.
    """

    requires: ClassVar[frozenset[Capability]] = frozenset()
    #: An oracle measures what the answer alone gives away (the floor of leakage), not an attacker:
    #: the bench reports it beside the attacks and never counts it as the strongest attack.
    oracle: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # An attack built in Python is checked as one in a spec is: against its annotated options.
        validating_init(cls, lambda attack: f"attack {type(attack).__name__}")

    def __init__(self, view: AttackerView) -> None:
        missing = self.requires - view.capabilities
        if missing:
            names = ", ".join(sorted(c.value for c in missing))
            raise CapabilityError(
                f"{type(self).__name__} needs {names}, which this attacker view does not grant; "
                f"grant them with AttackerView.of(split, capabilities=...)"
            )
        self.view = view

    def fit(self) -> Attack:
        """Prepare the attack (train a decoder, a shadow model...). Default: nothing to prepare."""
        return self

    @abstractmethod
    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct inputs in [0, 1] (NCHW, ``view.input_shape``) from features ``z``."""


def _query_function(edge: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def query(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return edge(x).detach()

    return query


def _reinitialised(edge: nn.Module) -> nn.Module:
    """A copy of ``edge`` with every parameter re-drawn: the structure without the weights."""
    shadow = copy.deepcopy(edge)
    for module in shadow.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return shadow
