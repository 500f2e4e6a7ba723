"""What a device does around its edge half beyond running it: the client-side hooks of a deployment.

Most defenses deploy an edge that the device runs and nothing more. Some keep a secret on the device:
Salted DNNs draw a salt per sample, mix it into the feature and decode the cloud's answer with it. An
edge that keeps a secret implements :class:`SecretKeepingEdge`. The edge client, the output audit and
anything else that plays the device go through :class:`DeviceSide`, which gives every edge the same
two calls (``encode`` before sending, ``decode`` after the answer), so none of them names a defense.
A new defense with a client-side secret implements the protocol on the edge module it deploys; the
bundle carries that module, so the device runs it as the audit evaluated it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from splitveil.salt.sources import SaltSource, SecretSalts


@runtime_checkable
class SecretKeepingEdge(Protocol):
    """An edge half whose device keeps a secret per sample that the cloud never sees."""

    @property
    def num_secrets(self) -> int:
        """The secrets are the integers ``range(num_secrets)``."""
        ...

    @property
    def secret_source(self) -> SaltSource:
        """The edge's own (seeded) source: what the audit and attackers querying the edge draw from."""
        ...

    @property
    def answer_classes(self) -> int:
        """The width of the cloud's answer (and of the decoded logits)."""
        ...

    def __call__(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor: ...

    def decode_answer(self, answer: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        """The cloud's ``answer`` to a query made with ``secret``, as logits over the true classes."""
        ...


class DeviceSide:
    """Run an edge as a device does: draw its secret (if it keeps one), compute the feature, decode the answer.

    ``secrets`` replaces the source the secrets are drawn from. Without it, a device (``secure=True``)
    draws from the operating system's CSPRNG, and an audit (``secure=False``) from the edge's own seeded
    source, so its figures are reproducible.
    """

    def __init__(self, edge: nn.Module, secrets: SaltSource | None = None, *, secure: bool = False) -> None:
        keeper = edge if isinstance(edge, SecretKeepingEdge) else None
        if keeper is None and secrets is not None:
            raise ValueError("a secret (salt) source was given, but this edge keeps no secret")
        self.edge = edge
        self.keeper = keeper
        if keeper is None:
            self.secrets: SaltSource | None = None
        elif secrets is not None:
            self.secrets = secrets
        else:
            self.secrets = SecretSalts(keeper.num_secrets) if secure else keeper.secret_source

    @property
    def num_secrets(self) -> int | None:
        """How many secrets the edge draws from (None: it keeps none)."""
        return None if self.keeper is None else self.keeper.num_secrets

    @property
    def num_classes(self) -> int | None:
        """The width of every answer when the edge states it (None: not known from the edge alone)."""
        return None if self.keeper is None else self.keeper.answer_classes

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, secret)``: what is sent for ``images`` and the secrets used (None if the edge keeps none)."""
        if self.keeper is None or self.secrets is None:
            return self.edge(images), None
        secret = self.secrets.draw(len(images)).to(images.device)
        return self.keeper(images, secret), secret

    def decode(self, answer: torch.Tensor, secret: torch.Tensor | None) -> torch.Tensor:
        """The cloud's ``answer`` as logits over the true classes."""
        if self.keeper is None or secret is None:
            return answer
        return self.keeper.decode_answer(answer, secret)
